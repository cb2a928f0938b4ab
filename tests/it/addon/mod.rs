//! The Home Assistant add-on: what the Supervisor, the add-on linter and
//! the container rely on, tested without Docker.

mod backup;
mod container;
mod manifest;
