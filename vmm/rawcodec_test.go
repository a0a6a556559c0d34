package vmm

import (
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/vmm/kvm"
)

// TestRawCodecMatchesEncodingBinary: for every kernel structure in the
// machine state, its raw memory is exactly what encoding/binary writes
// (little-endian, no hidden padding), so the state format is unchanged by
// the fast codec. Values are random bytes, so every field is checked.
func TestRawCodecMatchesEncodingBinary(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	values := []any{
		new(uint32), new(kvm.Regs), new(kvm.Sregs), new(kvm.FPU), new(kvm.Xcrs), new(kvm.LapicState),
		new(kvm.DebugRegs), new(kvm.MPState), new(kvm.VCPUEvents), new([3]kvm.Irqchip), new(kvm.PitState2),
		new(kvm.ClockData), make([]kvm.CPUIDEntry2, 3), make([]kvm.MsrEntry, 5),
	}
	for _, v := range values {
		raw := rawBytes(v)
		for i := range raw {
			raw[i] = byte(r.UintN(256))
		}
		want, err := binary.Append(nil, binary.LittleEndian, v)
		require.NoError(t, err, "%T", v)
		require.Equal(t, want, rawAppend(nil, v), "%T: raw memory differs from encoding/binary", v)
		require.Equal(t, binary.Size(v), rawSize(v), "%T", v)

		back := reflect.New(reflect.TypeOf(v)).Interface()
		if reflect.TypeOf(v).Kind() == reflect.Slice {
			back = reflect.MakeSlice(reflect.TypeOf(v), reflect.ValueOf(v).Len(), reflect.ValueOf(v).Len()).Interface()
		} else {
			back = reflect.New(reflect.TypeOf(v).Elem()).Interface()
		}
		require.NoError(t, rawDecode(want, back))
		require.Equal(t, v, back, "%T", v)
		require.Error(t, rawDecode(want[:len(want)-1], back), "a short buffer is refused")
	}
}
