// A worker as @discordjs/brokers users write one: a PubSubRedisBroker in a consumer
// group reads discluster's event streams and prints each event as one JSON line
// ({"event", "shardId", "payload"}), acknowledging it. Used by discluster's tests.
//
//   node consume.mjs REDIS_URL GROUP EVENT[,EVENT...]
import { PubSubRedisBroker } from '@discordjs/brokers';
import { Redis } from 'ioredis';

const [url, group, events] = process.argv.slice(2);
if (!url || !group || !events) {
	console.error('usage: node consume.mjs REDIS_URL GROUP EVENT[,EVENT...]');
	process.exit(2);
}
const names = events.split(',');
const broker = new PubSubRedisBroker(new Redis(url), { group, name: `${group}-${process.pid}`, blockTimeout: 500 });
broker.on('error', (error) => console.error('broker error:', error));
for (const event of names) {
	broker.on(event, async ({ data, ack }) => {
		process.stdout.write(`${JSON.stringify({ event, shardId: data.shardId, payload: data.payload })}\n`);
		await ack();
	});
}
await broker.subscribe(names);
process.stdout.write(`${JSON.stringify({ subscribed: names })}\n`);
const stop = async () => {
	await broker.destroy();
	process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
