<?php
// Send one sqjobs job from PHP with the AWS SDK for PHP (version 3).
//
//   composer install
//   php send_job.php QUEUE NAME [ARGS_JSON] [KWARGS_JSON]
//   php send_job.php prod-emails send_welcome '[42]' '{"lang": "es"}'
//
// It prints the job id (not SQS's message id): the id `sqjobs status`, the
// worker's log lines and the dashboard know the job by.
// QUEUE is the SQS queue name as SQS knows it (your [sqs] queue_prefix in front).
// Credentials come from the usual AWS chain (environment, profile, role);
// AWS_REGION (default us-east-1) and AWS_ENDPOINT_URL (an SQS-compatible
// server instead of AWS) are read from the environment.
//
// From your own code: require Composer's autoloader, include this file and call
// sqjobs_send($sqsClient, $queue, $name, $args, $kwargs, $key).
//
// SQJOBS_SIGNING_KEY, when set, signs the message: give it the first of the
// workers' [sqjobs] signing_keys (see the README).

use Aws\Sqs\SqsClient;

/**
 * JSON with keys sorted at every level, no spaces, every character past "~" as a \uXXXX escape:
 * the canonical form sqjobs signs. Lists stay lists; an object is a PHP object or an array with keys.
 */
function sqjobs_canonical_json($value): string
{
    if (is_object($value)) {
        $value = (array) $value;
        $isList = false;
    } else {
        $isList = is_array($value) && array_is_list($value);
    }
    if (is_array($value) && $isList) {
        return '[' . implode(',', array_map('sqjobs_canonical_json', $value)) . ']';
    }
    if (is_array($value)) {
        $keys = array_map('strval', array_keys($value));
        sort($keys, SORT_STRING);
        $parts = [];
        foreach ($keys as $key) {
            $parts[] = sqjobs_canonical_json($key) . ':' . sqjobs_canonical_json($value[$key]);
        }
        return '{' . implode(',', $parts) . '}';
    }
    // json_encode escapes past-ASCII characters as \u00e9 by default, not DEL; slashes stay as they are.
    $json = json_encode($value, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION);
    return str_replace("\x7f", '\u007f', $json);
}

/** A new job id: 32 hex digits, as sqjobs makes them. */
function sqjobs_new_id(): string
{
    return bin2hex(random_bytes(16));
}

/** The id sqjobs gives $key: the first 8 hex digits of its SHA-256. */
function sqjobs_key_id(string $key): string
{
    return substr(hash('sha256', $key), 0, 8);
}

/**
 * Return the message body sqjobs workers read: base64 of the JSON {id, name, args, kwargs[, headers]}.
 *
 * With $key (the first of the workers' [sqjobs] signing_keys) the message is signed: HMAC-SHA256 of
 * the canonical form of everything in it but the signature headers (sqjobs/signing.py says how).
 */
function sqjobs_body(string $name, array $args = [], array $kwargs = [], ?string $key = null,
                     ?string $id = null): string
{
    $payload = [
        'id' => $id ?? sqjobs_new_id(),
        'name' => $name,
        'args' => array_values($args),
        // An empty PHP array would encode as [], but kwargs must be a JSON object.
        'kwargs' => (object) $kwargs,
    ];
    if ($key !== null && $key !== '') {
        if (strlen($key) < 32) {
            throw new InvalidArgumentException('a signing key must be at least 32 bytes');
        }
        $signature = hash_hmac('sha256', sqjobs_canonical_json($payload), $key);
        $payload['headers'] = ['sqjobs-key-id' => sqjobs_key_id($key), 'sqjobs-signature' => $signature];
    }
    return base64_encode(json_encode($payload, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE
        | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION));
}

/** Send job $name to $queue and return its job id (what `sqjobs status`, logs and the dashboard show). */
function sqjobs_send(SqsClient $sqs, string $queue, string $name, array $args = [], array $kwargs = [],
                     ?string $key = null): string
{
    $url = $sqs->getQueueUrl(['QueueName' => $queue])->get('QueueUrl');
    $id = sqjobs_new_id();
    $message = ['QueueUrl' => $url, 'MessageBody' => sqjobs_body($name, $args, $kwargs, $key, $id)];
    if (substr($queue, -5) === '.fifo') {
        $message['MessageGroupId'] = $name; // jobs of one name run one at a time, in order
    }
    $sqs->sendMessage($message);
    return $id;
}

if (PHP_SAPI === 'cli' && realpath($argv[0]) === __FILE__) {
    require __DIR__ . '/vendor/autoload.php';
    if ($argc < 3) {
        fwrite(STDERR, "usage: php send_job.php QUEUE NAME [ARGS_JSON] [KWARGS_JSON]\n");
        exit(2);
    }
    $options = ['version' => '2012-11-05', 'region' => getenv('AWS_REGION') ?: 'us-east-1'];
    if (getenv('AWS_ENDPOINT_URL')) {
        $options['endpoint'] = getenv('AWS_ENDPOINT_URL');
    }
    $args = json_decode($argv[3] ?? '[]', true, 512, JSON_THROW_ON_ERROR);
    $kwargs = json_decode($argv[4] ?? '{}', true, 512, JSON_THROW_ON_ERROR);
    $key = getenv('SQJOBS_SIGNING_KEY') ?: null;
    echo sqjobs_send(new SqsClient($options), $argv[1], $argv[2], $args, $kwargs, $key), "\n";
}
