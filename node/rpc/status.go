package rpc

import (
	"errors"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
)

// Errors a caller branches on. Each has a code on the wire, so errors.Is holds for
// an error a peer returned.
var (
	ErrNotLeader    = errors.New("not the leader")
	ErrNoLeader     = errors.New("no leader")
	ErrLeaseRefused = errors.New("lease refused")
	ErrBudgetLow    = errors.New("session start budget low")
	// ErrNotOwner refuses an identify to a node that is not the shard's current owner
	// with a lease.
	ErrNotOwner = errors.New("not the shard's owner")
	// ErrNotMember refuses a caller that is not (or no longer) a member, or that
	// speaks for a node its certificate does not name.
	ErrNotMember = errors.New("not a member")
)

// Status is how a service's error crosses the wire: net/rpc carries an error's text
// only, so every reply embeds the error's code, which the caller's errors.Is branches
// on, beside its text. A method returns nil and fills this in.
type Status struct {
	Code    string // one of the codes of wireCodes; "" for an error without one
	Message string // the error's text; "" for success
}

// wireCodes are the errors a caller branches on, by their code on the wire.
var wireCodes = map[string]error{
	"not_leader": ErrNotLeader, "no_leader": ErrNoLeader, "lease_refused": ErrLeaseRefused,
	"budget_low": ErrBudgetLow, "not_owner": ErrNotOwner, "not_member": ErrNotMember, "invalid_command": fsm.ErrInvalid,
	// The leader's refusal of an operator's request (a reshard) reaches the API as one.
	api.CodeRefused: api.ErrRefused,
	// A command's refusals keep the API's codes end to end.
	api.CodeUnknownShard: api.ErrUnknownShard, api.CodeNotReady: api.ErrNotReady, api.CodeOwnerMoving: api.ErrOwnerMoving,
	api.CodeRateLimited: api.ErrRateLimited, api.CodePayloadTooLarge: api.ErrPayloadTooLarge, api.CodeBadCommand: api.ErrBadCommand,
}

func (s *Status) status() *Status { return s }

// Set records err (nil for success) in the reply.
func (s *Status) Set(err error) {
	*s = Status{}
	if err == nil {
		return
	}
	s.Message = err.Error()
	for code, sentinel := range wireCodes {
		if errors.Is(err, sentinel) {
			s.Code = code
			return
		}
	}
}

// Err is the error the reply carries, matching its sentinel with errors.Is.
func (s *Status) Err() error {
	if s.Message == "" && s.Code == "" {
		return nil
	}
	return &remoteErr{msg: s.Message, sentinel: wireCodes[s.Code]}
}

// remoteErr is an error a peer's service returned.
type remoteErr struct {
	msg      string
	sentinel error // nil when the error had no code
}

func (e *remoteErr) Error() string        { return e.msg }
func (e *remoteErr) Is(target error) bool { return e.sentinel != nil && target == e.sentinel }

// statusReply is every reply: it embeds Status.
type statusReply interface{ status() *Status }
