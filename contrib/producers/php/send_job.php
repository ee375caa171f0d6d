<?php
// Send one sqjobs job from PHP with the AWS SDK for PHP (version 3).
//
//   composer install
//   php send_job.php QUEUE NAME [ARGS_JSON] [KWARGS_JSON]
//   php send_job.php prod-emails send_welcome '[42]' '{"lang": "es"}'
//
// QUEUE is the SQS queue name as SQS knows it (your [sqs] queue_prefix in front).
// Credentials come from the usual AWS chain (environment, profile, role);
// AWS_REGION (default us-east-1) and AWS_ENDPOINT_URL (an SQS-compatible
// server instead of AWS) are read from the environment.
//
// From your own code: require Composer's autoloader, include this file and call
// sqjobs_send($sqsClient, $queue, $name, $args, $kwargs).

use Aws\Sqs\SqsClient;

/** Return the message body sqjobs workers read: base64 of the JSON {name, args, kwargs}. */
function sqjobs_body(string $name, array $args = [], array $kwargs = []): string
{
    $payload = [
        'name' => $name,
        'args' => array_values($args),
        // An empty PHP array would encode as [], but kwargs must be a JSON object.
        'kwargs' => (object) $kwargs,
    ];
    return base64_encode(json_encode($payload, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE));
}

/** Send job $name to $queue and return the SQS message id. */
function sqjobs_send(SqsClient $sqs, string $queue, string $name, array $args = [], array $kwargs = []): string
{
    $url = $sqs->getQueueUrl(['QueueName' => $queue])->get('QueueUrl');
    $message = ['QueueUrl' => $url, 'MessageBody' => sqjobs_body($name, $args, $kwargs)];
    if (substr($queue, -5) === '.fifo') {
        $message['MessageGroupId'] = $name; // jobs of one name run one at a time, in order
    }
    return $sqs->sendMessage($message)->get('MessageId');
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
    echo sqjobs_send(new SqsClient($options), $argv[1], $argv[2], $args, $kwargs), "\n";
}
