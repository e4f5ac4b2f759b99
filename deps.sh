# Sourced by ./run-tests and ./run-kvd: installs the Debian packages that
# are missing (as root, or through sudo). Usage: kv_ensure_packages pkg...
kv_ensure_packages() {
    local missing=() p sudo=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    echo "installing ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# What building kvd needs.
KV_BUILD_PACKAGES=(build-essential cmake pkg-config zlib1g-dev libxxhash-dev libevent-dev uthash-dev)
