#!/usr/bin/env bash
# Build the OpenSSL 3.0 FIPS provider (fips.so) from Debian bookworm's openssl source package,
# run `openssl fipsinstall`, write an OpenSSL config that activates the fips and base providers
# with default_properties = fips=yes, cache the result, and print how to run Node with it.
#
# Usage:
#   scripts/fips-provider.sh            build if not cached, then print shell exports
#   scripts/fips-provider.sh --env      same, as KEY=VALUE lines (for tests and tools)
#   scripts/fips-provider.sh --check    build if not cached, then prove Node runs in FIPS mode
#   scripts/fips-provider.sh --rebuild  throw the cache away first
#
# Environment:
#   MESHID_FIPS_CACHE             cache folder (default: ${XDG_CACHE_HOME:-$HOME/.cache}/meshid/fips-provider)
#   MESHID_FIPS_OPENSSL_SOURCE    what `apt-get source` fetches (default: openssl/bookworm)
#
# A provider built this way runs the FIPS provider's code and self-tests; it is NOT by itself a
# FIPS 140 validated module (see docs/fips.md). Needs root for apt-get when something is missing.
set -euo pipefail

mode=exports
rebuild=0
for arg in "$@"; do
  case "$arg" in
    --env) mode=env ;;
    --check) mode=check ;;
    --rebuild) rebuild=1 ;;
    -h | --help)
      sed -n '2,17p' "$0"
      exit 0
      ;;
    *)
      echo "fips-provider: unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

cache="${MESHID_FIPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshid/fips-provider}"
source_spec="${MESHID_FIPS_OPENSSL_SOURCE:-openssl/bookworm}"
lib_dir="$cache/lib"
module="$lib_dir/fips.so"
module_cnf="$cache/fipsmodule.cnf"
config="$cache/openssl-fips.cnf"
stamp="$cache/READY"

log() { echo "fips-provider: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "needs root to run: $*"
    exit 1
  fi
}

apt_updated=0
work=""
apt_update() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
}

ensure_tools() {
  local need=()
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  command -v make >/dev/null 2>&1 || need+=(make)
  command -v perl >/dev/null 2>&1 || need+=(perl)
  command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# apt-get source needs a deb-src entry; bookworm ships binary entries only.
ensure_deb_src() {
  if apt-cache showsrc openssl 2>/dev/null | grep -q '^Package: openssl'; then
    return
  fi
  log "adding a deb-src entry for bookworm"
  as_root tee /etc/apt/sources.list.d/meshid-deb-src.sources >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_updated=0
  apt_update
}

build() {
  ensure_tools
  ensure_deb_src
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # apt's download user must be able to write there.
  chmod 755 "$work"
  log "downloading the source package $source_spec"
  # apt verifies the files against the signed Sources index; --download-only skips dpkg-source.
  (cd "$work" && apt-get source --download-only -qq "$source_spec" >/dev/null)
  local dsc orig version
  dsc="$(ls "$work"/openssl_*.dsc)"
  version="$(sed -n 's/^Version: //p' "$dsc")"
  orig="$(ls "$work"/openssl_*.orig.tar.gz)"
  # The FIPS provider is built from the upstream sources (the orig tarball), as OpenSSL's
  # validated builds are; Debian's packaging patches are not applied.
  mkdir "$work/src"
  tar -xzf "$orig" -C "$work/src" --strip-components=1
  log "building providers/fips.so from openssl $version (this takes a minute or two)"
  (
    cd "$work/src"
    ./Configure enable-fips no-tests >"$work/configure.log" 2>&1 ||
      {
        tail -20 "$work/configure.log" >&2
        exit 1
      }
    # Generated headers first (the provider's objects include them), then only the provider.
    nice make -j"$(nproc)" build_generated >"$work/make.log" 2>&1 &&
      nice make -j"$(nproc)" providers/fips.so >>"$work/make.log" 2>&1 ||
      {
        tail -40 "$work/make.log" >&2
        exit 1
      }
  )
  rm -rf "$cache"
  mkdir -p "$lib_dir"
  cp "$work/src/providers/fips.so" "$module"
  # fipsinstall runs the provider's self-tests and records the module's MAC.
  openssl fipsinstall -module "$module" -out "$module_cnf" >"$work/fipsinstall.log" 2>&1 ||
    {
      cat "$work/fipsinstall.log" >&2
      exit 1
    }
  cat >"$config" <<EOF
# meshid: OpenSSL configuration for FIPS mode (written by scripts/fips-provider.sh).
# Node reads the nodejs_conf section; the openssl CLI reads openssl_conf.
config_diagnostics = 1
nodejs_conf = openssl_init
openssl_conf = openssl_init

.include $module_cnf

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect

[provider_sect]
fips = fips_sect
base = base_sect

[base_sect]
activate = 1

[algorithm_sect]
default_properties = fips=yes
EOF
  printf '%s\n' "$version" >"$stamp"
  log "cached in $cache"
}

if [ "$rebuild" -eq 1 ]; then
  rm -rf "$cache"
fi
if [ ! -f "$stamp" ] || [ ! -f "$module" ] || [ ! -f "$config" ]; then
  build
fi

node_options="--openssl-config=$config --enable-fips"
case "$mode" in
  env)
    echo "OPENSSL_MODULES=$lib_dir"
    echo "MESHID_FIPS_OPENSSL_CONFIG=$config"
    echo "MESHID_FIPS_PROVIDER_VERSION=$(cat "$stamp")"
    echo "NODE_OPTIONS=$node_options"
    ;;
  exports)
    echo "# FIPS provider from openssl $(cat "$stamp") (source package), cached in $cache"
    echo "export OPENSSL_MODULES='$lib_dir'"
    echo "export NODE_OPTIONS='$node_options'"
    echo "# or: OPENSSL_MODULES='$lib_dir' node $node_options bin/meshid.js ... --fips"
    ;;
  check)
    OPENSSL_MODULES="$lib_dir" node --openssl-config="$config" --enable-fips --input-type=module -e '
      import crypto from "node:crypto";
      const refused = (f) => { try { f(); return false; } catch { return true; } };
      const fips = crypto.getFips();
      const md5 = refused(() => crypto.createHash("md5").update("x").digest());
      const chacha = refused(() => crypto.createCipheriv("chacha20-poly1305", Buffer.alloc(32), Buffer.alloc(12), { authTagLength: 16 }));
      const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
      const sig = crypto.sign("sha256", Buffer.from("meshid"), privateKey);
      const p256 = crypto.verify("sha256", Buffer.from("meshid"), publicKey, sig);
      const ok = fips === 1 && md5 && chacha && p256;
      process.stdout.write(`getFips()=${fips} md5Refused=${md5} chacha20Refused=${chacha} p256=${p256} openssl=${process.versions.openssl}\n`);
      process.exit(ok ? 0 : 1);
    '
    ;;
esac
