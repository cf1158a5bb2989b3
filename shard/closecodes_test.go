package shard

import "testing"

func TestCloseTableCoversEveryGatewayCode(t *testing.T) {
	for code := 4000; code <= 4014; code++ {
		r, ok := closeActions[code]
		if !ok {
			t.Errorf("close code %d has no rule", code)
			continue
		}
		if r.cause == "" {
			t.Errorf("close code %d has no cause", code)
		}
	}
	fatal := map[int]bool{4004: true, 4010: true, 4011: true, 4012: true, 4013: true, 4014: true}
	for code, r := range closeActions {
		if (r.action == actionFatal) != fatal[code] {
			t.Errorf("close code %d: action %v, fatal should be %v", code, r.action, fatal[code])
		}
	}
	for _, code := range []int{-1, 1000, 1001, 1006, 1011, 4999} {
		if got := closeRuleFor(code).action; got != actionResume {
			t.Errorf("unlisted close code %d: action %v, want resume", code, got)
		}
	}
	// The shard's own close codes must never end its session on Discord's side.
	for _, code := range []int{CloseResumable, closeZombie, closeReconnect} {
		if code == 1000 || code == 1001 {
			t.Errorf("own close code %d would invalidate the session", code)
		}
	}
}
