#!/usr/bin/env bash
# Install the Debian packages GridPatrol needs, only when something is missing.
#   tools/ensure-system.sh          PostgreSQL 15 + PostGIS 3 + pgRouting, python3-venv, and a CJK
#                                   font (fonts-wqy-microhei) for the charts and PDF reports
#   tools/ensure-system.sh test     … plus headless Chromium for browser tests
# As root it runs apt-get update once, then apt-get install; otherwise it prints the command.
set -euo pipefail
want=(postgresql-15-postgis-3 postgresql-15-pgrouting osmium-tool fonts-wqy-microhei)
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then want+=(python3-venv); fi
if [ "${1:-}" = "test" ]; then want+=(chromium); fi
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
