package sink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

// A receiver of the webhook sink's POSTs, to copy: verify the signature over the
// body as received, then decode the events, store them, and only then answer 2xx
// (an event counts as delivered once the answer says so). Drop duplicates by
// (shard, session, seq): after a crash of a node, or a POST whose answer was lost,
// the same events come again.
func ExampleVerifyWebhook() {
	secret := []byte("the contents of --sink-secret-file") // the receiver's copy of the secret
	receiver := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, 16<<20))
		if err != nil {
			http.Error(rw, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := sink.VerifyWebhook(secret, r.Header, body, time.Now(), 0); err != nil {
			http.Error(rw, err.Error(), http.StatusUnauthorized) // a 4xx: the node does not retry blindly
			return
		}
		var events []struct {
			Node    string          `json:"node"`
			Shard   int             `json:"shard"`
			Session string          `json:"session"`
			Seq     int64           `json:"seq"`
			Type    string          `json:"t"`
			D       json.RawMessage `json:"d"`
		}
		if err := json.Unmarshal(body, &events); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		for _, e := range events {
			fmt.Println(e.Type, "shard", e.Shard, "seq", e.Seq, string(e.D))
		}
		rw.WriteHeader(http.StatusNoContent) // a 5xx or 429 instead: sent again, later
	})

	srv := httptest.NewServer(receiver)
	defer srv.Close()
	w, err := sink.NewWebhook(sink.WebhookConfig{URL: srv.URL + "/discord", Secret: shard.Token(secret)})
	if err != nil {
		panic(err)
	}
	defer w.Close()
	err = w.Deliver(context.Background(), []sink.Delivery{{Node: "n1", Event: shard.Event{
		ShardID: 3, SessionID: "9c1b", Seq: 42, Type: "MESSAGE_CREATE", Data: json.RawMessage(`{"content":"hi"}`)}}})
	fmt.Println("delivered:", err == nil)
	// Output:
	// MESSAGE_CREATE shard 3 seq 42 {"content":"hi"}
	// delivered: true
}
