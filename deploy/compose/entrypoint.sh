#!/bin/sh
# Secrets arrive as files (compose secrets, Kubernetes secret volumes), never as inline
# values: FEEDPULSE_<NAME>_FILE=/run/secrets/x becomes FEEDPULSE_<NAME>=<contents of x>.
# Only the settings below are read this way; the *_FILE variables are removed afterwards.
set -eu
for name in SASL_USERNAME SASL_PASSWORD; do
    file_var="FEEDPULSE_${name}_FILE"
    eval "file=\${$file_var:-}"
    if [ -n "$file" ]; then
        if [ ! -r "$file" ]; then
            echo "feedpulse-entrypoint: $file_var=$file is not readable" >&2
            exit 64
        fi
        value=$(cat "$file")
        export "FEEDPULSE_${name}=$value"
        unset "$file_var"
    fi
done
exec "$@"
