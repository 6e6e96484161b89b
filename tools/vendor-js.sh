#!/usr/bin/env bash
# Refresh the browser libraries the map pages serve from /static/vendor (pages must work offline,
# so nothing is loaded from a CDN). Run by a developer when upgrading; the files are committed.
set -euo pipefail
dest="$(cd "$(dirname "$0")/.." && pwd)/api/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fetch() { npm pack --silent "$1" >/dev/null && tar xzf ./*.tgz && rm ./*.tgz && mv package "$2"; }
fetch leaflet@1.9.4 leaflet
fetch jquery@3.7.1 jquery
fetch leaflet-realtime@2.2.0 realtime
fetch leaflet-draw@1.0.4 draw
fetch leaflet-timedimension@1.1.1 timedimension
fetch iso8601-js-period@0.2.1 iso8601
fetch jquery-ui-dist@1.13.2 jqueryui
fetch moment@2.29.4 moment
fetch leaflet.vectorgrid@1.3.0 vectorgrid
fetch swagger-ui-dist@5.36.0 swagger-ui
fetch redoc@2.5.4 redoc
rm -rf "$dest" && mkdir -p "$dest"/{leaflet,draw,swagger-ui,redoc}
cp leaflet/dist/leaflet.js leaflet/dist/leaflet.css "$dest/leaflet/"
cp -r leaflet/dist/images "$dest/leaflet/"
cp jquery/dist/jquery.min.js "$dest/"
cp realtime/dist/leaflet-realtime.js "$dest/"
cp draw/dist/leaflet.draw.js draw/dist/leaflet.draw.css "$dest/draw/"
cp -r draw/dist/images "$dest/draw/"
cp timedimension/dist/leaflet.timedimension.min.js timedimension/dist/leaflet.timedimension.control.css "$dest/"
# its @font-face loads Glyphicons from a CDN: pages load nothing from outside (CSP font-src 'self')
sed -i '/@font-face {/,/^}/d' "$dest/leaflet.timedimension.control.css"
cp iso8601/iso8601.js "$dest/"
cp jqueryui/jquery-ui.min.js "$dest/"
cp moment/min/moment.min.js "$dest/"
cp vectorgrid/dist/Leaflet.VectorGrid.bundled.min.js "$dest/"
# /docs and /redoc (api/routers/home.py): no CDN, no source-map references to files we do not ship
cp swagger-ui/swagger-ui-bundle.js swagger-ui/swagger-ui-bundle.js.LICENSE.txt swagger-ui/NOTICE \
   swagger-ui/favicon-32x32.png "$dest/swagger-ui/"
sed '/sourceMappingURL=/d' swagger-ui/swagger-ui.css > "$dest/swagger-ui/swagger-ui.css"
cp redoc/bundles/redoc.standalone.js.LICENSE.txt "$dest/redoc/"
# its "API docs by Redocly" badge loads an image from cdn.redoc.ly: ours instead (a plain mark)
sed -e '/^\/\/# sourceMappingURL=/d' \
    -e 's#src:"https://cdn.redoc.ly/redoc/logo-mini.svg"#src:"/static/vendor/redoc/logo-mini.svg"#' \
    redoc/bundles/redoc.standalone.js > "$dest/redoc/redoc.standalone.js"
printf '%s\n' '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#c1352d"/><text x="8" y="12" font-family="sans-serif" font-size="11" font-weight="bold" fill="#fff" text-anchor="middle">R</text></svg>' > "$dest/redoc/logo-mini.svg"
{
  echo "# Vendored browser libraries (served locally so map pages work offline)"
  echo
  echo "| file | package | licence |"
  echo "|---|---|---|"
  for p in leaflet jquery realtime draw timedimension iso8601 jqueryui moment vectorgrid swagger-ui redoc; do
    name=$(node -p "require('./$p/package.json').name")
    ver=$(node -p "require('./$p/package.json').version")
    lic=$(node -p "require('./$p/package.json').license || 'see package'")
    echo "| $p | $name@$ver (npm) | $lic |"
  done
} > "$dest/LICENSES.md"
for p in leaflet jquery realtime draw timedimension iso8601 jqueryui moment vectorgrid swagger-ui redoc; do
  for f in LICENSE LICENSE.md LICENSE.txt license; do
    [ -f "$p/$f" ] && cp "$p/$f" "$dest/LICENSE.$p" && break
  done
done
echo "vendored into $dest"
