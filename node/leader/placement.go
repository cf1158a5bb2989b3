package leader

import (
	"fmt"

	"github.com/discluster/discluster/balancer"
	"github.com/discluster/discluster/fsm"
)

// The balancer is pure and knows nothing of the replicated state's encoding; these
// mappings say which state means what, so that renumbering one side's enum cannot
// silently turn a failed node into a draining one.

func balancerState(s fsm.MemberState) (balancer.MemberState, error) {
	switch s {
	case fsm.Alive:
		return balancer.Alive, nil
	case fsm.Failed:
		return balancer.Failed, nil
	case fsm.Draining:
		return balancer.Draining, nil
	case fsm.Left:
		return balancer.Left, nil
	}
	return 0, fmt.Errorf("member state %d has no balancer meaning", s)
}

func balancerPhase(p fsm.Phase) (balancer.Phase, error) {
	switch p {
	case fsm.Assigned:
		return balancer.Assigned, nil
	case fsm.Revoking:
		return balancer.Revoking, nil
	}
	return 0, fmt.Errorf("assignment phase %d has no balancer meaning", p)
}
