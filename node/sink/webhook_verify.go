package sink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of every webhook POST. The signature is
//
//	X-Discluster-Signature: sha256=<hex(HMAC-SHA256(secret, timestamp + "." + body))>
//
// with timestamp the X-Discluster-Timestamp header's value (Unix seconds, as
// Stripe and Svix sign theirs), so that a receiver that checks the timestamp is
// recent refuses a recorded POST replayed later. X-Discluster-Delivery names the
// POST's content: a retry of the same events carries the same id, so a receiver
// that took a POST whose answer was lost can drop the retry.
const (
	WebhookTimestampHeader = "X-Discluster-Timestamp"
	WebhookSignatureHeader = "X-Discluster-Signature"
	WebhookDeliveryHeader  = "X-Discluster-Delivery"
)

// DefaultWebhookSkewTolerance is how far from now VerifyWebhook accepts a timestamp
// by default (Stripe's choice): room for clock skew and retries, little for a replay.
const DefaultWebhookSkewTolerance = 5 * time.Minute

const webhookSignaturePrefix = "sha256="

// SignWebhook is the X-Discluster-Signature value of body sent at timestamp ts
// (Unix seconds, as in X-Discluster-Timestamp).
func SignWebhook(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return webhookSignaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// ErrWebhookSignature is a POST whose signature or timestamp does not verify.
var ErrWebhookSignature = errors.New("webhook signature does not verify")

// VerifyWebhook is what a receiver checks before it trusts a POST: the signature is
// the HMAC-SHA256 of the secret over timestamp + "." + body, compared in constant
// time, and the timestamp is within tolerance of now (0: DefaultWebhookSkewTolerance),
// so that a recorded POST cannot be replayed later. body is the request's body
// exactly as received, before any decoding. It needs only the standard library, to
// be copied into a receiver; ExampleVerifyWebhook is a whole receiver.
func VerifyWebhook(secret []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultWebhookSkewTolerance
	}
	ts := h.Get(WebhookTimestampHeader)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: no %s", ErrWebhookSignature, WebhookTimestampHeader)
	}
	if skew := now.Sub(time.Unix(sec, 0)); skew > tolerance || skew < -tolerance {
		return fmt.Errorf("%w: timestamp %s is %s from now (tolerance %s)", ErrWebhookSignature, ts, skew.Round(time.Second), tolerance)
	}
	got := h.Get(WebhookSignatureHeader)
	if !strings.HasPrefix(got, webhookSignaturePrefix) {
		return fmt.Errorf("%w: no %s %s…", ErrWebhookSignature, WebhookSignatureHeader, webhookSignaturePrefix)
	}
	want := SignWebhook(secret, ts, body)
	if !hmac.Equal([]byte(got), []byte(want)) {
		return ErrWebhookSignature
	}
	return nil
}
