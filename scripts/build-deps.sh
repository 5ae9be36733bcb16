# Sourced by scripts/quickstart.sh and scripts/test.sh: makes sure the vendored librdkafka
# (the Kafka client) can be built, which needs cmake and the libcurl headers. Installs them
# with apt-get when missing and run as root; otherwise says what to install.
#
#   ensure_build_deps NAME    NAME prefixes the messages

ensure_build_deps() {
  local name=$1
  if command -v cmake >/dev/null 2>&1 &&
    { [ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -e /usr/include/curl/curl.h ]; }; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$name: installing cmake and libcurl headers (to build the vendored librdkafka)"
    apt-get update -qq && apt-get install -y -qq cmake libcurl4-openssl-dev >/dev/null
  else
    echo "$name: install cmake and the libcurl headers first: sudo apt-get install -y cmake libcurl4-openssl-dev" >&2
    exit 1
  fi
}
