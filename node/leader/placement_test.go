package leader

import (
	"testing"

	"github.com/discluster/discluster/balancer"
	"github.com/discluster/discluster/fsm"
)

func TestStateMappingToTheBalancer(t *testing.T) {
	for _, tc := range []struct {
		in   fsm.MemberState
		want balancer.MemberState
	}{
		{fsm.Alive, balancer.Alive},
		{fsm.Failed, balancer.Failed},
		{fsm.Draining, balancer.Draining},
		{fsm.Left, balancer.Left},
	} {
		if got, err := balancerState(tc.in); err != nil || got != tc.want {
			t.Errorf("%v → %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := balancerState(fsm.MemberState(200)); err == nil {
		t.Error("an unknown member state was mapped")
	}
	for _, tc := range []struct {
		in   fsm.Phase
		want balancer.Phase
	}{
		{fsm.Assigned, balancer.Assigned},
		{fsm.Revoking, balancer.Revoking},
	} {
		if got, err := balancerPhase(tc.in); err != nil || got != tc.want {
			t.Errorf("%v → %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := balancerPhase(fsm.Phase(200)); err == nil {
		t.Error("an unknown phase was mapped")
	}
}
