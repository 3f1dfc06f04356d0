#!/usr/bin/env bash
# Install the pinned Claude Code CLI for csd's end-to-end tests, outside the repo.
#
#   bash .ci/install-claude.sh            # prints the absolute path of a working `claude` as its last line
#
# Environment:
#   CSD_E2E_CACHE          cache root (default: $HOME/.cache/csd-e2e)
#   CSD_CLAUDE_VERSION     version to install (default: 2.1.330, the one the e2e tests were written against)
#   CSD_CLAUDE_DIR         install dir (default: $CSD_E2E_CACHE/claude-$CSD_CLAUDE_VERSION)
#
# Reuses an existing install when its binary already answers `--version` with the pinned version.
# Only the npm registry is contacted (the package's postinstall just links the platform binary).
# All progress goes to stderr; stdout carries only the final path.
set -euo pipefail

VERSION="${CSD_CLAUDE_VERSION:-2.1.330}"
CACHE="${CSD_E2E_CACHE:-${HOME:-/root}/.cache/csd-e2e}"
DIR="${CSD_CLAUDE_DIR:-$CACHE/claude-$VERSION}"
PKG="@anthropic-ai/claude-code"

VHOME="$(mktemp -d)" || { echo "install-claude: ERROR: mktemp failed" >&2; exit 1; }  # empty HOME so a version check never touches the user's config
trap 'rm -rf -- "$VHOME"' EXIT

log() { printf 'install-claude: %s\n' "$*" >&2; }
die() { printf 'install-claude: ERROR: %s\n' "$*" >&2; exit 1; }

# Candidate binaries, best first: the wrapper's linked binary, then the platform package's own binary
# (the latter works even when the postinstall did not run, e.g. with --ignore-scripts).
candidates() {
    local nm="$DIR/node_modules"
    printf '%s\n' "$nm/.bin/claude" "$nm/$PKG/bin/claude.exe" "$nm/$PKG/bin/claude"
    local p
    for p in "$nm"/@anthropic-ai/claude-code-*/claude; do
        [ -e "$p" ] && printf '%s\n' "$p"
    done
    return 0
}

# Prints the absolute path of the first candidate whose `--version` reports $VERSION.
find_working() {
    local c out real
    while IFS= read -r c; do
        [ -e "$c" ] || continue
        real="$(readlink -f -- "$c" 2>/dev/null || printf '%s' "$c")"
        [ -x "$real" ] || continue
        out="$(env HOME="$VHOME" DISABLE_AUTOUPDATER=1 timeout 30 "$real" --version 2>/dev/null || true)"
        case "$out" in
            "$VERSION "*|"$VERSION") printf '%s\n' "$real"; return 0 ;;
        esac
        log "candidate $c answered --version with '${out:-<nothing>}', not $VERSION"
    done < <(candidates)
    return 1
}

if bin="$(find_working)"; then
    log "reusing $PKG@$VERSION in $DIR"
    printf '%s\n' "$bin"
    exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm not found on PATH (need node + npm to install $PKG@$VERSION)"

mkdir -p "$DIR" || die "cannot create $DIR"
log "installing $PKG@$VERSION into $DIR (about 370 MB) ..."
start=$(date +%s)
if ! npm install --prefix "$DIR" --no-audit --no-fund --no-save --loglevel=error "$PKG@$VERSION" >&2; then
    die "npm install --prefix $DIR $PKG@$VERSION failed (see npm output above)"
fi
log "npm install finished in $(( $(date +%s) - start )) s"

if bin="$(find_working)"; then
    printf '%s\n' "$bin"
    exit 0
fi
die "installed $PKG@$VERSION into $DIR but no binary answers --version with $VERSION (looked at: $(candidates | tr '\n' ' '))"
