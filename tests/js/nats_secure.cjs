// nats.js (TCP) with a token against two NATS ports: subscribe on the first, publish on
// the second once interest has crossed (a request to a responder beside the subscriber
// answers); prints what the subscriber saw as one JSON line.
// usage: node nats_secure.cjs <sub-url> <pub-url> <token>
"use strict";

async function main() {
  const [subUrl, pubUrl, token] = process.argv.slice(2);
  const { connect, StringCodec } = require("nats");
  const sc = StringCodec();
  const opts = (url) => ({ servers: url, token, timeout: 5000, maxReconnectAttempts: 0 });
  const nc1 = await connect(opts(subUrl));
  const sub = nc1.subscribe("jsec.>", { max: 2 });
  nc1.subscribe("probe.jsec", { callback: (_e, m) => m.respond(sc.encode("ok")) });
  await nc1.flush();
  const nc2 = await connect(opts(pubUrl));
  let crossed = false;
  for (let i = 0; i < 200 && !crossed; i++) {
    try {
      await nc2.request("probe.jsec", sc.encode(""), { timeout: 200 });
      crossed = true;
    } catch (e) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  nc2.publish("jsec.a", sc.encode("1"));
  nc2.publish("jsec.b", sc.encode("2"));
  await nc2.flush();
  const seen = [];
  const timer = setTimeout(() => nc1.close(), 10000);
  for await (const m of sub) seen.push([m.subject, sc.decode(m.data)]);
  clearTimeout(timer);
  console.log(JSON.stringify({ seen, crossed }));
  await nc2.close();
  await nc1.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
