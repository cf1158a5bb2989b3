package rpc

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"testing"

	"github.com/discluster/discluster/fsm"
)

// An error crosses the wire as a code beside its text: after a gob round trip the
// caller still matches it with errors.Is, without reading the text.
func TestRPCErrorsKeepTheirCodeOverTheWire(t *testing.T) {
	for _, sentinel := range []error{ErrNotLeader, ErrNoLeader, ErrLeaseRefused, ErrBudgetLow, ErrNotOwner, fsm.ErrInvalid} {
		sent := fmt.Errorf("context: %w: details", sentinel)
		var r RenewReply
		r.Set(sent)
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(&r); err != nil {
			t.Fatal(err)
		}
		var got RenewReply
		if err := gob.NewDecoder(&buf).Decode(&got); err != nil {
			t.Fatal(err)
		}
		err := got.status().Err()
		if !errors.Is(err, sentinel) || err.Error() != sent.Error() {
			t.Errorf("%v came back as %q (is: %v)", sentinel, err, errors.Is(err, sentinel))
		}
		for _, other := range []error{ErrNotLeader, ErrNotOwner} {
			if other != sentinel && errors.Is(err, other) {
				t.Errorf("%v also matches %v", sentinel, other)
			}
		}
	}
	// An error without a code keeps its text and matches no sentinel, even one it names.
	var r ApplyReply
	r.Set(errors.New("not the leader, says the text"))
	if err := r.status().Err(); err == nil || errors.Is(err, ErrNotLeader) {
		t.Errorf("an uncoded error came back as %v", err)
	}
	r.Set(nil)
	if err := r.status().Err(); err != nil {
		t.Errorf("success came back as %v", err)
	}
}
