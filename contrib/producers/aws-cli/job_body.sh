#!/bin/sh
# Print a signed sqjobs message body (base64 of its JSON) for the AWS CLI example, or any shell.
#
#   SQJOBS_SIGNING_KEY=... contrib/producers/aws-cli/job_body.sh NAME [ARGS_JSON] [KWARGS_JSON]
#
# The key is the first of the workers' [sqjobs] signing_keys (at least 32 bytes);
# SQJOBS_JOB_ID, when set, is the job id (otherwise a new one is made).
# The signature is the hex HMAC-SHA256 of the canonical form, the JSON of
# {id, name, args, kwargs} with sorted keys, no spaces and every character past
# "~" escaped (jq -cSa); the key id is the first 8 hex digits of the key's SHA-256.
# Needs jq and openssl. openssl reads the key from its command line: on a
# machine shared with people who must not see it, sign from a program instead.
set -eu

if [ $# -lt 1 ] || [ -z "${SQJOBS_SIGNING_KEY:-}" ]; then
    echo "usage: SQJOBS_SIGNING_KEY=KEY $0 NAME [ARGS_JSON] [KWARGS_JSON]" >&2
    exit 2
fi
key=$SQJOBS_SIGNING_KEY
if [ "$(printf '%s' "$key" | wc -c)" -lt 32 ]; then
    echo "$0: a signing key must be at least 32 bytes" >&2
    exit 2
fi
id=${SQJOBS_JOB_ID:-$(openssl rand -hex 16)}
message=$(jq -cn --arg id "$id" --arg name "$1" --argjson args "${2:-[]}" --argjson kwargs "${3:-{\}}" \
    '{id: $id, name: $name, args: $args, kwargs: $kwargs}')
canonical=$(printf '%s' "$message" | jq -cSa .)
signature=$(printf '%s' "$canonical" | openssl dgst -sha256 -hmac "$key" -r | cut -d' ' -f1)
key_id=$(printf '%s' "$key" | sha256sum | cut -c1-8)
printf '%s' "$message" \
    | jq -c --arg kid "$key_id" --arg sig "$signature" '. + {headers: {"sqjobs-key-id": $kid, "sqjobs-signature": $sig}}' \
    | base64 | tr -d '\n'
echo
