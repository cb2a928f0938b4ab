#!/bin/sh
# Renders the add-on's icon and logo from their SVG sources into the
# repository root, where the add-on store looks for them. Needs
# rsvg-convert (Debian and Ubuntu: apt-get install librsvg2-bin).
set -eu
cd "$(dirname "$0")"
rsvg-convert --width 128 --height 128 icon.svg --output ../icon.png
rsvg-convert --width 250 --height 100 logo.svg --output ../logo.png
