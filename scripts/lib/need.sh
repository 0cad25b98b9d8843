# shellcheck shell=bash
# need COMMAND DEBIAN-PACKAGE: makes sure COMMAND exists, installing the Debian package with
# apt-get when it is missing and we are root (CI starts from a bare machine). The sourcing
# script defines step (progress line) and fail (message, exit 1). apt-get update runs once per
# process tree.
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		step "installing $2 (for $1)"
		if [ -z "${DEB_TEST_APT_UPDATED:-}" ]; then
			apt-get update -qq
			export DEB_TEST_APT_UPDATED=1
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
	fi
	command -v "$1" >/dev/null 2>&1 || fail "$1 is missing (Debian package $2)"
}
