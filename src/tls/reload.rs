//! A TLS configuration that follows its files: renewed certificates are
//! used by new handshakes without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use time::OffsetDateTime;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::error::{TlsError, TlsErrorKind};
use super::inspect::CertificateInfo;
use super::material::TlsMaterial;
use crate::config::{TlsConfig, TlsRole};

/// The rustls configuration of one role.
#[derive(Clone)]
enum Built {
    Server(Arc<ServerConfig>),
    Client(Arc<ClientConfig>),
}

/// What is in force: the material and the configuration built from it.
struct Current {
    material: Arc<TlsMaterial>,
    built: Built,
}

/// The size, modification time and (on Unix) inode of each file a
/// configuration reads: a change in any means the files were rewritten or
/// replaced (renewal tools often write a new file and rename it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Stamp(Vec<(PathBuf, Option<FileStamp>)>);

/// Size, modification time and inode of one file.
type FileStamp = (u64, Option<SystemTime>, u64);

impl Stamp {
    fn of(config: &TlsConfig) -> Self {
        let mut files = Vec::new();
        for path in
            [&config.ca_file, &config.cert_file, &config.key_file, &config.key_password_file].into_iter().flatten()
        {
            files.push((path.clone(), file_stamp(path)));
            if path.is_dir()
                && let Ok(entries) = std::fs::read_dir(path)
            {
                let mut inner: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                inner.sort();
                files.extend(inner.into_iter().map(|p| {
                    let stamp = file_stamp(&p);
                    (p, stamp)
                }));
            }
        }
        Self(files)
    }
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.len(), meta.modified().ok(), inode))
}

#[derive(Debug, Default)]
struct Watch {
    /// The stamp of the files at the last load attempt, good or bad.
    stamp: Stamp,
    /// Why the last reload failed, until one succeeds.
    last_error: Option<String>,
}

/// A loaded TLS configuration that can be reloaded while in use.
///
/// Items keep one handle per configuration and ask it for an acceptor or
/// connector for each new connection ([`acceptor`](Self::acceptor),
/// [`connector`](Self::connector)); connections already open keep the
/// configuration they started with. [`reload_if_changed`](Self::reload_if_changed),
/// called periodically, re-reads the files when they change on disk, so a
/// renewed certificate is used by the next handshake. A reload that fails
/// (a half-written file, a key that does not match yet, a certificate that
/// has expired or is not valid yet) keeps the previous configuration in
/// force and reports the error.
pub struct TlsConfigHandle {
    name: String,
    config: TlsConfig,
    current: RwLock<Arc<Current>>,
    watch: Mutex<Watch>,
}

impl std::fmt::Debug for TlsConfigHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfigHandle")
            .field("name", &self.name)
            .field("material", &self.current().material)
            .field("last_reload_error", &self.last_reload_error())
            .finish()
    }
}

impl TlsConfigHandle {
    /// Loads the configuration `name` and builds its rustls configuration.
    pub fn load(name: &str, config: &TlsConfig) -> Result<Self, TlsError> {
        let stamp = Stamp::of(config);
        let current = build(name, config)?;
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            current: RwLock::new(Arc::new(current)),
            watch: Mutex::new(Watch { stamp, last_error: None }),
        })
    }

    /// The configuration's name under `tls:`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// The role: server (acceptor) or client (connector).
    pub fn role(&self) -> TlsRole {
        self.config.role
    }

    fn current(&self) -> Arc<Current> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The material in force: certificates as loaded, for inspection.
    pub fn material(&self) -> Arc<TlsMaterial> {
        self.current().material.clone()
    }

    /// The server configuration in force; `None` for `role: client`.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        match &self.current().built {
            Built::Server(config) => Some(config.clone()),
            Built::Client(_) => None,
        }
    }

    /// The client configuration in force; `None` for `role: server`.
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        match &self.current().built {
            Built::Client(config) => Some(config.clone()),
            Built::Server(_) => None,
        }
    }

    /// An acceptor with the configuration in force, for one accepted
    /// connection: `handle.acceptor()?.accept(tcp).await`.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        self.server_config().map(TlsAcceptor::from).ok_or_else(|| self.wrong_role(TlsRole::Server))
    }

    /// A connector with the configuration in force, for one outgoing
    /// connection: `handle.connector()?.connect(handle.server_name(host)?, tcp).await`.
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        self.client_config().map(TlsConnector::from).ok_or_else(|| self.wrong_role(TlsRole::Client))
    }

    /// The name to send (SNI) and verify for a connection to `host`:
    /// `server_name` when configured, else `host`.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        super::material::server_name(&self.name, &self.config, host)
    }

    /// Reloads when any of the files changed (size, modification time or
    /// inode) since the last attempt. Returns `Ok(true)` when a new
    /// configuration is in force, `Ok(false)` when nothing changed, and the
    /// error when the changed files cannot be used — the previous
    /// configuration then stays in force, and the same files are not retried
    /// until they change again (see [`last_reload_error`](Self::last_reload_error)).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = Stamp::of(&self.config);
        {
            let watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
            if watch.stamp == stamp {
                return Ok(false);
            }
        }
        self.reload_with(stamp).map(|()| true)
    }

    /// Reloads the files now, whether or not they changed.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_with(Stamp::of(&self.config))
    }

    fn reload_with(&self, stamp: Stamp) -> Result<(), TlsError> {
        let result = build(&self.name, &self.config).and_then(|current| {
            valid_now(&self.name, &self.config, &current.material, OffsetDateTime::now_utc())?;
            Ok(current)
        });
        let mut watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        watch.stamp = stamp;
        match result {
            Ok(current) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(current);
                watch.last_error = None;
                tracing::info!(tls = %self.name, "TLS configuration reloaded: new connections use the new files");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(tls = %self.name, %error, "TLS files changed but cannot be used; keeping the previous configuration");
                watch.last_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Why the last reload failed, while the previous configuration is kept;
    /// `None` after a successful load.
    pub fn last_reload_error(&self) -> Option<String> {
        self.watch.lock().unwrap_or_else(PoisonError::into_inner).last_error.clone()
    }

    fn wrong_role(&self, expected: TlsRole) -> TlsError {
        TlsError::new(&self.name, None, TlsErrorKind::WrongRole { expected, actual: self.config.role })
    }
}

/// Refuses renewed files whose certificates are not valid now (expired, or
/// not valid yet): every peer refuses such a certificate — clients a
/// server's, a server a client's — so putting it in force would stop a feed
/// that the certificate in force still carries, and keeping that one
/// leaves the feed running while the error tells the operator what to fix.
/// At start there is nothing else to use: [`TlsConfigHandle::load`] takes
/// the files as they are, and the doctor reports them.
fn valid_now(name: &str, config: &TlsConfig, material: &TlsMaterial, now: OffsetDateTime) -> Result<(), TlsError> {
    for (i, der) in material.certificate_chain().iter().enumerate() {
        // A certificate rustls took but this parser cannot read is left
        // to the handshake and the doctor.
        let Ok(cert) = CertificateInfo::parse(der) else { continue };
        let (state, date) = if now > cert.not_after {
            ("expired on", cert.not_after)
        } else if now < cert.not_before {
            ("is not valid until", cert.not_before)
        } else {
            continue;
        };
        let kind = TlsErrorKind::NotValidNow { index: i + 1, state, date: super::format_time(date) };
        return Err(TlsError::new(name, config.cert_file.as_deref(), kind));
    }
    Ok(())
}

fn build(name: &str, config: &TlsConfig) -> Result<Current, TlsError> {
    let material = TlsMaterial::load(name, config)?;
    let built = match config.role {
        TlsRole::Server => Built::Server(material.server_config()?),
        TlsRole::Client => Built::Client(material.client_config()?),
    };
    Ok(Current { material: Arc::new(material), built })
}
