#!/usr/bin/env bash
# Fetches the Beam job-server jar for a portable runner from Maven Central with
# mvn, caches it, and prints ONLY the jar's absolute path on stdout (logs go to
# stderr), so that callers can write:
#   jar="$(scripts/fetch_job_server.sh flink)"
#   python -m pipeline.preprocess ... --runner FlinkRunner --flink_master='[local]' \
#       --flink_job_server_jar "$jar" --environment_type LOOPBACK
# Usage: scripts/fetch_job_server.sh flink|spark
# Environment:
#   JOB_SERVER_CACHE  cache dir (default ${XDG_CACHE_HOME:-$HOME/.cache}/beam-tft-preprocess/jars)
#   BEAM_VERSION      used only when the project's virtualenv has no apache_beam
#   FLINK_VERSION     Flink minor version of the job server (default below)
#   VENV              virtualenv whose apache_beam decides the version (default ROOT/.venv)
# The jar must match the installed Python SDK's version exactly: the job server
# and the SDK speak the same portability protocol release by release. Beam's own
# runner would download it at run time over plain HTTP; mvn instead goes through
# the machine's Maven set-up (mirrors, proxies) and checks checksums (-C).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"

# 1.20: Beam 2.72 publishes job servers for Flink 1.17-1.20
# (FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS); 1.20 is the newest of them, the
# SDK's default --flink_version (so the flag can be left out), and Flink
# supports Java 17, this machine's default JDK, since 1.18 (FLINK-15736).
FLINK_VERSION="${FLINK_VERSION:-1.20}"
# Pinned so that the same mvn goal runs everywhere; 3.8.1 runs on Maven 3.6.3+.
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

log() { echo "fetch_job_server: $*" >&2; }

runner="${1:-}"
case "$runner" in
  flink) artifact_id="beam-runners-flink-${FLINK_VERSION}-job-server" ;;
  spark) artifact_id="beam-runners-spark-3-job-server" ;;
  *) echo "usage: $0 flink|spark" >&2; exit 2 ;;
esac

if [ -x "$VENV/bin/python" ] &&
  beam_version="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("apache-beam"))' 2>/dev/null)"; then
  log "apache-beam $beam_version in $VENV"
elif [ -n "${BEAM_VERSION:-}" ]; then
  beam_version="$BEAM_VERSION"
  log "no apache_beam in $VENV; using BEAM_VERSION=$beam_version"
else
  echo "fetch_job_server: no apache_beam in $VENV and BEAM_VERSION is not set" >&2
  exit 2
fi
case "$beam_version" in
  *dev*|*rc*) echo "fetch_job_server: $beam_version is not a release on Maven Central" >&2; exit 2 ;;
esac

cache="${JOB_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/beam-tft-preprocess/jars}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
jar="$cache/${artifact_id}-${beam_version}.jar"

if [ -s "$jar" ]; then
  log "cached: $jar"
else
  coords="org.apache.beam:${artifact_id}:${beam_version}:jar"
  log "fetching $coords with mvn (about 100-250 MB)"
  # Copy into a private dir first and move into place, so that an interrupted
  # download never leaves a truncated jar that a later run would take as cached.
  staging="$(mktemp -d "$cache/.fetch.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  # -U retries an artifact that an earlier run failed to find (Maven caches the
  # failure for a day); -C fails on a checksum mismatch instead of warning.
  if ! mvn -B -q -U -C "${DEPENDENCY_PLUGIN}:copy" \
    -Dartifact="$coords" -DoutputDirectory="$staging" -Dmdep.overWriteReleases=true >&2; then
    echo "fetch_job_server: mvn could not fetch $coords (see above); if no Maven repository" \
      "reachable from here serves it, copy the jar to $jar by hand" >&2
    exit 1
  fi
  mv "$staging/${artifact_id}-${beam_version}.jar" "$jar"
  log "cached: $jar"
fi
echo "$jar"
