#!/usr/bin/env bash
# Debian packages the tests need (report/DICOM/PACS tests: Orthanc + DICOMweb plugin, dciodvfy, DCMTK,
# headless Chromium, poppler's pdftoppm/pdftotext, the Pango library WeasyPrint renders PDFs with).
# Idempotent and quiet: installs only what is missing; a machine without apt or root is left alone (those
# tests then skip with their reason).
set -euo pipefail
PACKAGES=(orthanc orthanc-dicomweb dicom3tools dcmtk chromium poppler-utils libpango-1.0-0 libpangoft2-1.0-0
          fonts-dejavu-core)
missing=()
for p in "${PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-packages: not root or no apt-get; missing: ${missing[*]} (their tests will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# The orthanc package may start a system service; the tests start their own on free loopback ports.
if command -v service >/dev/null; then service orthanc stop >/dev/null 2>&1 || true; fi
