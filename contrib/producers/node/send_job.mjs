// Send one sqjobs job from Node.js with the AWS SDK v3.
//
//   npm install
//   node send_job.mjs QUEUE NAME [ARGS_JSON] [KWARGS_JSON]
//   node send_job.mjs prod-emails send_welcome '[42]' '{"lang": "es"}'
//
// QUEUE is the SQS queue name as SQS knows it (your [sqs] queue_prefix in front).
// Credentials and region come from the usual AWS configuration (environment,
// profile, role); AWS_ENDPOINT_URL points at an SQS-compatible server instead of AWS.
import { GetQueueUrlCommand, SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";

/** Return the message body sqjobs workers read: base64 of the JSON {name, args, kwargs}. */
export function jobBody(name, args = [], kwargs = {}) {
  const payload = JSON.stringify({ name, args, kwargs });
  return Buffer.from(payload, "utf8").toString("base64");
}

/** Send job `name` to `queue`; resolve to the SQS message id. */
export async function sendJob(client, queue, name, args = [], kwargs = {}) {
  const { QueueUrl } = await client.send(new GetQueueUrlCommand({ QueueName: queue }));
  const message = { QueueUrl, MessageBody: jobBody(name, args, kwargs) };
  if (queue.endsWith(".fifo")) {
    message.MessageGroupId = name; // jobs of one name run one at a time, in order
  }
  const { MessageId } = await client.send(new SendMessageCommand(message));
  return MessageId;
}

async function main(argv) {
  if (argv.length < 2) {
    console.error("usage: node send_job.mjs QUEUE NAME [ARGS_JSON] [KWARGS_JSON]");
    process.exit(2);
  }
  const [queue, name, argsJson = "[]", kwargsJson = "{}"] = argv;
  const options = process.env.AWS_ENDPOINT_URL ? { endpoint: process.env.AWS_ENDPOINT_URL } : {};
  const client = new SQSClient(options);
  console.log(await sendJob(client, queue, name, JSON.parse(argsJson), JSON.parse(kwargsJson)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((error) => {
    console.error(`error: ${error.message}`);
    process.exit(1);
  });
}
