package node

import "testing"

func TestDefaultConfigHoldsShardsAndConfigZeroDoesNot(t *testing.T) {
	if w := DefaultConfig().Weight; w != 1 {
		t.Errorf("DefaultConfig().Weight = %d, want 1", w)
	}
	if w := (Config{}).withDefaults().Weight; w != 0 {
		t.Errorf("Config{} gets weight %d; 0 must stay 0 (a node that holds no shards)", w)
	}
	d := DefaultConfig()
	if d.Lease == 0 || d.Timing == (Timing{}) || d.Voters == 0 || d.ShardsPerCluster == 0 {
		t.Errorf("DefaultConfig leaves defaults unset: %+v", d)
	}
}
