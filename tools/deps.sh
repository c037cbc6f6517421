#!/bin/sh
# Make sure the Debian packages the build needs are installed. As root,
# install what is missing; otherwise print the one command to run and fail.
# Arguments: the package names.
missing=""
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: cannot check packages (no dpkg-query); make sure these are installed:$missing" >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    echo "deps: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >&2 && exit 0
    echo "deps: apt-get failed; run it by hand: apt-get install$missing" >&2
    exit 1
fi
echo "deps: missing Debian packages. Run, as root:" >&2
echo "    apt-get install$missing" >&2
exit 1
