// A worker sending a gateway command as @discordjs/core's RedisGateway does: it
// publishes {shardId, payload} to the gateway_send stream with a PubSubRedisBroker.
// Used by discluster's tests.
//
//   node publish.mjs REDIS_URL SHARD_ID PAYLOAD_JSON
import { PubSubRedisBroker } from '@discordjs/brokers';
import { Redis } from 'ioredis';

const [url, shard, payload] = process.argv.slice(2);
if (!url || shard === undefined || !payload) {
	console.error('usage: node publish.mjs REDIS_URL SHARD_ID PAYLOAD_JSON');
	process.exit(2);
}
const redis = new Redis(url);
const broker = new PubSubRedisBroker(redis, { group: 'discluster-test-publisher' });
await broker.publish('gateway_send', { shardId: Number(shard), payload: JSON.parse(payload) });
process.stdout.write('published\n');
// The broker holds a second connection of its own (for reads): end both.
await broker.destroy();
process.exit(0);
