#!/usr/bin/env bash
# Debian packages the tests drive for real: Orthanc and dcmtk (PACS), Chromium (browser e2e).
set -euo pipefail
need=()
command -v Orthanc >/dev/null || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v storescu >/dev/null || need+=(dcmtk)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  # The orthanc package may start a system Orthanc on 8042/4242; tests run their own.
fi
