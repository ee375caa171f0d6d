#!/bin/sh
# Send one sqjobs job with the AWS CLI: base64 of the JSON {"id", "name", "args", "kwargs"}.
#
#   contrib/producers/aws-cli/send_job.sh QUEUE NAME [ARGS_JSON] [KWARGS_JSON]
#   contrib/producers/aws-cli/send_job.sh prod-emails send_welcome '[42]' '{"lang": "es"}'
#
# QUEUE is the SQS queue name as SQS knows it, so with your [sqs] queue_prefix
# in front. Credentials and region come from the usual AWS CLI configuration;
# set AWS_ENDPOINT_URL to use an SQS-compatible server instead of AWS.
# For a FIFO queue (name ending in .fifo) the message group is the job name.
# It prints the job id (not SQS's message id): the id `sqjobs status`, the
# worker's log lines and the dashboard know the job by.
#
# SQJOBS_SIGNING_KEY, when set, signs the message (it needs jq and openssl):
# give it the first of the workers' [sqjobs] signing_keys. The body is then
# made by jq, so that what is signed and what is sent hold the same numbers.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 QUEUE NAME [ARGS_JSON] [KWARGS_JSON]" >&2
    exit 2
fi
queue=$1
name=$2
args=${3:-[]}
kwargs=${4:-\{\}}

endpoint=""
if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
    endpoint="--endpoint-url $AWS_ENDPOINT_URL"
fi

# A new job id: 32 hex digits, as sqjobs makes them.
id=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

if [ -n "${SQJOBS_SIGNING_KEY:-}" ]; then
    body=$(SQJOBS_JOB_ID=$id sh "$(dirname "$0")/job_body.sh" "$name" "$args" "$kwargs")
else
    # NAME must not contain a double quote or a backslash; ARGS and KWARGS must be JSON.
    payload=$(printf '{"id": "%s", "name": "%s", "args": %s, "kwargs": %s}' "$id" "$name" "$args" "$kwargs")
    body=$(printf '%s' "$payload" | base64 | tr -d '\n')
fi

# shellcheck disable=SC2086  # $endpoint is empty or two words on purpose
url=$(aws $endpoint sqs get-queue-url --queue-name "$queue" --query QueueUrl --output text)

case $queue in
    *.fifo)
        # shellcheck disable=SC2086
        aws $endpoint sqs send-message --queue-url "$url" --message-body "$body" \
            --message-group-id "$name" --query MessageId --output text >/dev/null ;;
    *)
        # shellcheck disable=SC2086
        aws $endpoint sqs send-message --queue-url "$url" --message-body "$body" \
            --query MessageId --output text >/dev/null ;;
esac
echo "$id"
