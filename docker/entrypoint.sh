#!/bin/sh
# The image's entry point: `tunelab serve` with the container's address, port and keys.
#
#   docker run IMAGE MODEL_OR_RUN... [serve flags]   serve (arguments go to `tunelab serve`)
#   docker run IMAGE tunelab models pull NAME        any other tunelab command, run as given
#
# It refuses to start without an API key: outside a container `tunelab serve` would make
# one and print it once, but a key printed into container logs is a key nobody chose.
# Settings, from the environment (the Dockerfile sets the image's values):
#   TUNELAB_HOST                  the address to listen on (the image: every interface,
#                                 so a published port reaches it; keys stay required)
#   TUNELAB_PORT                  the port inside the container
#   TUNELAB_API_KEYS              keys, comma-separated, or
#   TUNELAB_API_KEY_FILE          a file of keys, one a line (a mounted secret); used when
#                                 it exists (default /run/secrets/tunelab_api_keys, where
#                                 compose mounts the secret tunelab_api_keys)
#   TUNELAB_DB_PASSWORD_FILE      optional: the request log database's password (a mounted
#                                 secret), handed to libpq as PGPASSWORD so that the --db
#                                 URL carries none
# This script knows nothing of models or the store: `tunelab serve` checks those.
set -eu

if [ "$#" -gt 0 ] && [ "$1" = "tunelab" ]; then
  shift
  exec tunelab "$@"
fi

key_file=""
if [ -e "${TUNELAB_API_KEY_FILE:=/run/secrets/tunelab_api_keys}" ]; then
  key_file=$TUNELAB_API_KEY_FILE  # tunelab reads it, and refuses one that holds no key
elif [ -z "$(printf '%s' "${TUNELAB_API_KEYS:-}" | tr -d ' ,')" ]; then
  echo "tunelab image: no API key: set TUNELAB_API_KEYS, or mount a key file (one key a" \
       "line) at $TUNELAB_API_KEY_FILE (or point TUNELAB_API_KEY_FILE at one)" >&2
  exit 2  # tunelab's exit code for a wrong command line or setting
fi

if [ -n "${TUNELAB_DB_PASSWORD_FILE:-}" ]; then
  if [ ! -r "$TUNELAB_DB_PASSWORD_FILE" ]; then
    echo "tunelab image: TUNELAB_DB_PASSWORD_FILE=$TUNELAB_DB_PASSWORD_FILE cannot be read;" \
         "mount the database password there or unset the variable" >&2
    exit 2
  fi
  # $(...) drops the trailing newline an editor leaves in the file
  PGPASSWORD=$(cat "$TUNELAB_DB_PASSWORD_FILE")
  export PGPASSWORD
fi

# exec: tunelab replaces this shell, so SIGTERM from `docker stop` reaches it (and it drains)
if [ -n "$key_file" ]; then
  exec tunelab serve --host "${TUNELAB_HOST:?}" --port "${TUNELAB_PORT:?}" \
    --api-key-file "$key_file" "$@"
fi
exec tunelab serve --host "${TUNELAB_HOST:?}" --port "${TUNELAB_PORT:?}" "$@"
