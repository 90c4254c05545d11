#!/usr/bin/env bash
# Debian tools that tests drive, installed by the project itself: chromium renders the load-test report headless;
# promtool (Debian package prometheus) checks the scrape configuration and tests the alert rules; amtool (Debian
# package prometheus-alertmanager) checks the workspace's alert manager configuration; redis-server and redis-cli
# (Debian packages redis-server, redis-tools; built with TLS) are the GCS fault-tolerance store of the local Ray test.
# Idempotent and quick when everything is present. Installs with apt-get when running as root on Debian; elsewhere
# it prints what to install and the tests that need a tool skip, saying so.
set -euo pipefail

# command:package pairs
TOOLS=("chromium:chromium" "promtool:prometheus" "amtool:prometheus-alertmanager" "redis-server:redis-server"
       "redis-cli:redis-tools")

missing=()
for pair in "${TOOLS[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "test tools: all present (${TOOLS[*]%%:*})"
  exit 0
fi
if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then
  echo "test tools: installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    exit 0
  fi
  echo "test tools: apt-get could not install ${missing[*]}; the tests that need them will skip" >&2
  exit 0
fi
echo "test tools: missing ${missing[*]}; install with: sudo apt-get install --no-install-recommends ${missing[*]}" \
     "(or your system's package); the tests that need them skip until then" >&2
