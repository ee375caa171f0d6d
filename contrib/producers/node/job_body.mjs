// The sqjobs message body, signed or not: no dependency beyond Node itself.
//
// import { jobBody } from "./job_body.mjs";
// jobBody("send_welcome", [42], { lang: "es" })                  // unsigned
// jobBody("send_welcome", [42], {}, { key: process.env.KEY })    // signed (sqjobs signing_keys)
import { createHash, createHmac, randomUUID } from "node:crypto";

/** JSON with keys sorted at every level, no spaces, and every character past "~" as a \uXXXX escape. */
export function canonicalJson(value) {
  if (Array.isArray(value)) {
    return `[${value.map(canonicalJson).join(",")}]`;
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort(); // UTF-16 order, the order Python's sort_keys uses for these keys
    return `{${keys.map((key) => `${canonicalJson(key)}:${canonicalJson(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** The id sqjobs gives `key`: the first 8 hex digits of its SHA-256. */
export function keyId(key) {
  return createHash("sha256").update(key, "utf8").digest("hex").slice(0, 8);
}

/**
 * Return the message body sqjobs workers read: base64 of the JSON {id, name, args, kwargs[, headers]}.
 *
 * With `key` (the first of the workers' signing keys) the message is signed: HMAC-SHA256 of the
 * canonical form of everything in it but the signature headers, as sqjobs/signing.py describes.
 */
export function jobBody(name, args = [], kwargs = {}, { key = null, id = null, headers = {} } = {}) {
  const message = { id: id || randomUUID().replaceAll("-", ""), name, args, kwargs };
  const extra = { ...headers };
  if (key) {
    if (Buffer.byteLength(key, "utf8") < 32) {
      throw new Error("a signing key must be at least 32 bytes");
    }
    const canonical = canonicalJson(Object.keys(extra).length ? { ...message, headers: extra } : message);
    extra["sqjobs-key-id"] = keyId(key);
    extra["sqjobs-signature"] = createHmac("sha256", key).update(canonical, "utf8").digest("hex");
  }
  const payload = Object.keys(extra).length ? { ...message, headers: extra } : message;
  return Buffer.from(JSON.stringify(payload), "utf8").toString("base64");
}

// node job_body.mjs NAME [ARGS_JSON] [KWARGS_JSON]: print the body (signed when SQJOBS_SIGNING_KEY is set).
if (import.meta.url === `file://${process.argv[1]}`) {
  const [name, argsJson = "[]", kwargsJson = "{}"] = process.argv.slice(2);
  if (!name) {
    console.error("usage: node job_body.mjs NAME [ARGS_JSON] [KWARGS_JSON]");
    process.exit(2);
  }
  const key = process.env.SQJOBS_SIGNING_KEY || null;
  console.log(jobBody(name, JSON.parse(argsJson), JSON.parse(kwargsJson), { key }));
}
