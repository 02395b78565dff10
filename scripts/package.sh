#!/usr/bin/env bash
# Builds the Debian package of clarity from this checkout, with dpkg-deb (no other packaging
# tool is needed): the release binary, the systemd units (installed disabled), the docs, the
# commented /etc/clarity/reconciler.env (a conffile), /etc/clarity/credentials and the
# maintainer scripts in packaging/deb/. No man pages yet: the binary's --help and
# docs/cli-reference.md are the reference.
#
#   scripts/package.sh            # cargo build --release, then target/debian/clarity_<version>_<arch>.deb
#
# Options (the install test uses them): --binary FILE packages an already built binary instead
# of building one; --version V overrides the version from Cargo.toml; --out DIR; --fast
# compresses little (quicker, larger).
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
version=""
out="target/debian"
compress=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    *) echo "scripts/package.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  cargo build --release --locked --bin clarity-reconcile
  binary="target/release/clarity-reconcile"
fi
if [ -z "$version" ]; then
  version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
fi
arch="$(dpkg --print-architecture)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"

install -D -m 0755 "$binary" "$root/usr/bin/clarity-reconcile"
# Debug info stays with the build; the package carries what runs.
strip --strip-debug "$root/usr/bin/clarity-reconcile"
for unit in systemd/clarity-reconcile.service systemd/clarity-drift.service systemd/clarity-drift.timer; do
  install -D -m 0644 "$unit" "$root/lib/systemd/system/$(basename "$unit")"
done
# Root-only: a repository URL may carry credentials.
install -D -m 0600 packaging/deb/reconciler.env "$root/etc/clarity/reconciler.env"
install -d -m 0700 "$root/etc/clarity/credentials"
doc="$root/usr/share/doc/clarity"
install -d -m 0755 "$doc"
install -m 0644 README.md docs/*.md docs/api.openapi.yaml "$doc/"
cat > "$doc/copyright" <<'TEXT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: clarity

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
TEXT

# Shared-library dependencies as dpkg-shlibdeps finds them, plus the programs the binary runs:
# git (the watch loop's mirror), ssh (git over SSH) and ssh-keygen (signed commits), useradd.
shlibs="$(cd "$stage" && mkdir -p debian && printf 'Source: clarity\n\nPackage: clarity\nArchitecture: any\n' > debian/control \
  && dpkg-shlibdeps -O "root/usr/bin/clarity-reconcile" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
depends="${shlibs:+$shlibs, }git, openssh-client, passwd"
size="$(du -sk "$root" | cut -f1)"

install -d -m 0755 "$root/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
  packaging/deb/control.in > "$root/DEBIAN/control"
echo /etc/clarity/reconciler.env > "$root/DEBIAN/conffiles"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"

mkdir -p "$out"
deb="$out/clarity_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
