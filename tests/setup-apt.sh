# Sourced by tests/setup.sh and tests/setup-libvirt.sh: how they may run apt-get.
#
# apt_as_root SCRIPT PACKAGES SKIPPED sets $as_root to "" (root) or "sudo -n" (password-less
# sudo) and returns 0; where neither works, or there is no apt-get, it says what to install
# by hand and what will be skipped meanwhile, and returns 1 (the caller then exits 0).

apt_as_root() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$1: no apt-get here: install $2 yourself, or $3 will be skipped" >&2
        return 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        as_root=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root="sudo -n"
    else
        echo "$1: not root and no password-less sudo: run" \
            "'sudo apt-get install --no-install-recommends $2' yourself," \
            "or $3 will be skipped" >&2
        return 1
    fi
}
