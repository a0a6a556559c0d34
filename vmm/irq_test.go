package vmm

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/devices"
	"github.com/wagglevm/waggle/vmm/kvm"
)

// irqLines reads, from a machine's exported irqchip state, which ISA lines
// the PIC master has latched (IRR, or ISR once the CPU took one) and which
// IOAPIC pins are asserted now (its IRR). The chips are the kernel's
// struct kvm_pic_state (last_irr, irr, imr, isr, ... as bytes) and struct
// kvm_ioapic_state (u64 base_address, u32 ioregsel, u32 id, u32 irr, ...).
func irqLines(t *testing.T, m *Machine) (pic uint8, ioapic uint32) {
	t.Helper()
	st, err := m.ExportState()
	require.NoError(t, err)
	master := st.Irqchip[kvm.KVM_IRQCHIP_PIC_MASTER].Chip
	pic = master[1] | master[3]
	ioapic = binary.LittleEndian.Uint32(st.Irqchip[kvm.KVM_IRQCHIP_IOAPIC].Chip[16:])
	return pic, ioapic
}

// TestUARTInterruptReachesIrqchip feeds COM1 a byte and looks for IRQ 4 in
// KVM's in-kernel PIC and IOAPIC: raised when the guest has enabled the
// received-data interrupt (IER.ERBFI), not raised when it has not. The IER
// write goes through the port bus, as a guest's OUT would.
func TestUARTInterruptReachesIrqchip(t *testing.T) {
	com1 := spec.COM1.IOBase()
	irq := spec.COM1.IRQ()
	for _, c := range []struct {
		name string
		ier  uint8
		want bool
	}{
		{"ERBFI", devices.UARTIerERBFI, true},
		{"no ERBFI", 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, _ := newTestMachine(t, codeSpinner, 1, 64)
			require.NoError(t, m.Start())
			require.NoError(t, m.Pause())
			m.ports.write(com1+devices.UARTRegIER, []byte{c.ier})

			pic, ioapic := irqLines(t, m)
			require.Zero(t, pic&(1<<irq), "IRQ %d raised before any input", irq)
			require.Zero(t, ioapic&(1<<irq), "IRQ %d raised before any input", irq)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, m.SerialInput(ctx, spec.COM1, []byte("x")))
			pic, ioapic = irqLines(t, m)
			require.Equal(t, c.want, pic&(1<<irq) != 0, "PIC master IRR|ISR %#02x", pic)
			require.Equal(t, c.want, ioapic&(1<<irq) != 0, "IOAPIC IRR %#08x", ioapic)

			// Reading the byte empties the FIFO: the UART lowers its line,
			// which the IOAPIC's IRR follows (the PIC latches the edge).
			rbr := []byte{0}
			m.ports.read(com1+devices.UARTRegRBR, rbr)
			require.Equal(t, []byte("x"), rbr)
			_, ioapic = irqLines(t, m)
			require.Zero(t, ioapic&(1<<irq), "IOAPIC IRR %#08x after the FIFO emptied", ioapic)
		})
	}
}
