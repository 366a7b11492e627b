#!/usr/bin/env bash
# Rebuilds plots/offline.html, the page `dvc plots show` and `dvc plots diff` write their
# plots into (.dvc/config: plots.html_template). DVC's own page loads vega, vega-lite and
# vega-embed from a CDN; this one carries the same versions inline, so the plots render
# with no network. Needs npm, which downloads the three packages; run it only to change
# the versions.
set -euo pipefail
cd "$(dirname "$0")"
VERSIONS=(vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2)  # those of DVC's default page
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "${VERSIONS[@]}" >/dev/null)
out=offline.html.tmp
{
  echo '<!DOCTYPE html>'
  echo '<!--'
  echo "groklab's page for dvc plots, made by plots/build_template.sh: DVC puts the plots"
  echo 'where the plot_divs placeholder stands. Inlined below, unmodified, from npm:'
  echo "${VERSIONS[*]},"
  echo 'each under the BSD-3-Clause licence that follows. They bundle d3 modules (ISC), and'
  echo 'vega-embed bundles fast-json-patch (MIT), json-stringify-pretty-compact (MIT),'
  echo 'semver (ISC), tslib (0BSD), vega-themes and vega-tooltip (BSD-3-Clause).'
  for v in "${VERSIONS[@]}"; do
    name=${v%@*}
    mkdir -p "$tmp/$name"
    tar -xzf "$tmp/$name-${v#*@}.tgz" -C "$tmp/$name"
    echo
    echo "== $v: LICENSE"
    cat "$tmp/$name/package/LICENSE"
  done
  echo '-->'
  echo '<html>'
  echo '<head>'
  echo '<meta charset="utf-8">'
  echo '{refresh_tag}'
  echo '<title>groklab plots</title>'
  for v in "${VERSIONS[@]}"; do
    name=${v%@*}
    echo "<script>/* $v */"
    cat "$tmp/$name/package/build/$name.min.js"
    echo
    echo '</script>'
  done
  echo '<style>'
  echo 'body { font-family: sans-serif; }'
  echo 'table { border-spacing: 15px; }'
  echo '</style>'
  echo '</head>'
  echo '<body>'
  echo '{plot_divs}'
  echo '</body>'
  echo '</html>'
} > "$out"
mv "$out" offline.html
echo "wrote plots/offline.html ($(wc -c < offline.html) bytes)"
