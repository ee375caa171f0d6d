// Send one sqjobs job from Node.js with the AWS SDK v3.
//
//   npm install
//   node send_job.mjs QUEUE NAME [ARGS_JSON] [KWARGS_JSON]
//   node send_job.mjs prod-emails send_welcome '[42]' '{"lang": "es"}'
//
// It prints the job id (not SQS's message id): the id `sqjobs status`, the
// worker's log lines and the dashboard know the job by.
// QUEUE is the SQS queue name as SQS knows it (your [sqs] queue_prefix in front).
// Credentials and region come from the usual AWS configuration (environment,
// profile, role); AWS_ENDPOINT_URL points at an SQS-compatible server instead of AWS.
//
// SQJOBS_SIGNING_KEY, when set, signs the message: give it the first of the
// workers' [sqjobs] signing_keys (see job_body.mjs and the README).
import { randomUUID } from "node:crypto";

import { GetQueueUrlCommand, SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";

import { jobBody } from "./job_body.mjs";

export { jobBody };

/** Send job `name` to `queue`; resolve to the job id (what `sqjobs status`, logs and the dashboard show). */
export async function sendJob(client, queue, name, args = [], kwargs = {}, key = process.env.SQJOBS_SIGNING_KEY) {
  const { QueueUrl } = await client.send(new GetQueueUrlCommand({ QueueName: queue }));
  const id = randomUUID().replaceAll("-", "");
  const message = { QueueUrl, MessageBody: jobBody(name, args, kwargs, { key: key || null, id }) };
  if (queue.endsWith(".fifo")) {
    message.MessageGroupId = name; // jobs of one name run one at a time, in order
  }
  await client.send(new SendMessageCommand(message));
  return id;
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
