// A game client in JavaScript with the stock NATS client (npm install nats), against
// a meshgate node's NATS port (python examples/nats/game_node.py):
//   node examples/nats/game_client.cjs nats://127.0.0.1:4222
"use strict";
const { connect, headers, StringCodec } = require("nats");

async function main() {
  const url = process.argv[2] || "nats://127.0.0.1:4222";
  const sc = StringCodec();
  const nc = await connect({ servers: url });

  // An area of interest is a subscription: here the cell the ship is in.
  const area = nc.subscribe("cell.0.0.>");
  // Confirmations and corrections of this client's own speculative inputs.
  const notices = nc.subscribe("$MG.notice");
  await nc.flush();

  // Inputs go to $IN.<entity>: the node routes each to the entity's current owner.
  // Meshgate-Relay also relays the move at once to everyone watching that subject,
  // marked provisional; the owner confirms or corrects it later.
  const session = "js-pilot-0123456789abcdef"; // keep it secret; reuse it after a reconnect
  ["good", "bad"].forEach((move, seq) => {
    const h = headers();
    h.set("Meshgate-Seq", String(seq));
    h.set("Meshgate-Relay", "cell.0.0.ship");
    h.set("Meshgate-Session", session);
    nc.publish("$IN.ship", sc.encode(move), { headers: h });
  });

  let speculation = 0;
  for await (const m of area) {
    if (!m.reply || !m.reply.startsWith("$")) continue; // the owner's state updates
    const kind = { $PROV: "provisional", $CONF: "confirmed", $CORR: "corrected" }[m.reply.split(".")[0]];
    console.log(`area   ${m.subject}: ${kind} ${JSON.stringify(sc.decode(m.data))}`);
    if (++speculation === 4) break; // two provisional moves, then the two verdicts
  }
  for await (const m of notices) {
    const kind = m.reply.startsWith("$CORR") ? "correction" : "confirmation";
    console.log(`notice ${kind} of my move ${m.reply.split(".").pop()}: ${JSON.stringify(sc.decode(m.data))}`);
    if (kind === "correction") break;
  }
  await nc.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
