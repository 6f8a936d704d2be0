// Runs fauxqs (an SQS/SNS emulator) for pubcrypt's tests: bound to 127.0.0.1 on a free
// port (its CLI and startFauxqs bind 0.0.0.0), with the address printed as one JSON line
// on stdout; exits when stdin closes (the Go test that started it is gone).
import path from "node:path";
import { pathToFileURL } from "node:url";

const dist = path.join(process.env.PUBCRYPT_FAUXQS_DIR, "node_modules", "fauxqs", "dist");
const load = (f) => import(pathToFileURL(path.join(dist, f)).href);
const { buildApp } = await load("app.js");
const { SqsStore } = await load("sqs/sqsStore.js");

// gocloud's awssqs URL opener turns awssqs://HOST/ACCOUNT/QUEUE into https://HOST/...,
// while fauxqs looks queues up by the exact URL it made (http://...). Real SQS accepts
// either, so accept either here too.
const getQueue = SqsStore.prototype.getQueue;
SqsStore.prototype.getQueue = function (url) {
  const q = getQueue.call(this, url);
  if (q || typeof url !== "string" || !url.startsWith("https://")) return q;
  return getQueue.call(this, "http://" + url.slice("https://".length));
};

// Queue URLs name the address clients used (http://127.0.0.1:PORT/...), not fauxqs's
// default sqs.REGION.localhost, which needs DNS tricks to resolve.
const sqsStore = new SqsStore();
sqsStore.host = "";

const app = buildApp({ logger: false, stores: { sqsStore } });
const address = await app.listen({ host: "127.0.0.1", port: 0 });
process.stdout.write(JSON.stringify({ address }) + "\n");
process.stdin.on("end", () => app.close().finally(() => process.exit(0)));
process.stdin.resume();
