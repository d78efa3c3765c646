#!/bin/sh
# Debian packages the small blocklist needs (NLTK's WordNet, built offline): installed only when missing.
set -eu
[ -f /usr/share/wordnet/index.noun ] && [ -f /usr/share/wordnet/index.sense ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index
