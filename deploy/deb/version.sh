#!/bin/sh
# Prints the Debian version of the package built from this tree: the version of a release tag
# v<X.Y.Z> on HEAD, a tag plus the commits since (1.2.0+3.g1a2b3c4), or, with no release tag,
# 0.0.0~git<commit date>.<commit> so that untagged builds sort before the first release.
set -eu
if v=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	v=${v#v}
	# 1.2.0-3-g1a2b3c4 -> 1.2.0+3.g1a2b3c4 ("-" would start a Debian revision)
	echo "$v" | sed -e 's/-\([0-9][0-9]*\)-g/+\1.g/' -e 's/-/~/g'
elif c=$(git log -1 --format='%cd.%h' --date=format:%Y%m%d 2>/dev/null); then
	echo "0.0.0~git$c"
else
	echo "0.0.0~unknown"
fi
