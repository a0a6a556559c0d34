package sledagent_test

import (
	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
)

func specFromJSON(js string) (spec.Spec, error) {
	sp, _ := versions.Lookup("vmm-server/v1")
	return sp.Decode([]byte(js))
}
