package devices_test

import (
	"fmt"
	"os"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/vmm/devices"
)

// A UART on COM1 whose output goes to stdout through a bounded buffer, so a
// slow terminal never stalls the guest.
func ExampleNewUART() {
	out := devices.NewOutputBuffer(os.Stdout, 64<<10)
	uart, err := devices.NewUART(spec.COM1, nil, out.Write)
	if err != nil {
		panic(err)
	}
	// What a vCPU's port I/O exits do:
	for _, c := range []byte("hi\n") {
		uart.PortWrite(0x3f8+devices.UARTRegTHR, []byte{c})
	}
	// The guest turns the 16-byte FIFOs on; host input for it to read:
	uart.PortWrite(0x3f8+devices.UARTRegFCR, []byte{devices.UARTFcrFE})
	n := uart.Receive([]byte("ok"))
	lsr := []byte{0}
	uart.PortRead(0x3f8+devices.UARTRegLSR, lsr)
	if err := out.Close(); err != nil {
		panic(err)
	}
	fmt.Println(n, lsr[0]&devices.UARTLsrDR != 0)
	// Output:
	// hi
	// 2 true
}
