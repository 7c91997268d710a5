// One scripted session of an unmodified nats.js (TCP) or nats.ws (WebSocket) client
// against a NATS server URL; prints what the client saw as one JSON line.
// usage: node nats_session.cjs <tcp|ws> <url>
"use strict";

async function main() {
  const [kind, url] = process.argv.slice(2);
  let nats;
  if (kind === "ws") {
    globalThis.WebSocket = require("ws"); // Node 20 has no WebSocket global
    nats = require("nats.ws");
  } else {
    nats = require("nats");
  }
  const { connect, headers, StringCodec } = nats;
  const sc = StringCodec();
  const nc = await connect({ servers: url, noEcho: false });
  const seen = [];
  const collect = (sub) =>
    (async () => {
      for await (const m of sub) {
        const h = m.headers ? Object.fromEntries([...m.headers].map(([k, v]) => [k, v[0]])) : null;
        seen.push([m.subject, sc.decode(m.data), h]);
      }
    })();
  const done = [collect(nc.subscribe("js.*.state")), collect(nc.subscribe("js.>"))];
  let workers = 0;
  const q1 = nc.subscribe("js-jobs", { queue: "w", callback: () => workers++ });
  const q2 = nc.subscribe("js-jobs", { queue: "w", callback: () => workers++ });
  const svc = nc.subscribe("js-svc", { callback: (_e, m) => m.respond(sc.encode("pong:" + sc.decode(m.data))) });
  await nc.flush();
  const h = headers();
  h.set("Trace-Id", "js1");
  nc.publish("js.1.state", sc.encode("s"), { headers: h });
  nc.publish("js.1.event", sc.encode("e"));
  for (let i = 0; i < 10; i++) nc.publish("js-jobs", sc.encode("j"));
  const reply = await nc.request("js-svc", sc.encode("hi"), { timeout: 5000 });
  let noResponders = null;
  try {
    await nc.request("js-nobody", sc.encode(""), { timeout: 5000 });
  } catch (err) {
    noResponders = err.code;
  }
  await nc.flush();
  await nc.drain();
  await Promise.all(done);
  console.log(JSON.stringify({ seen, workers, reply: sc.decode(reply.data), noResponders }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
