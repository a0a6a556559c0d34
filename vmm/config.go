package vmm

import (
	"io"

	"github.com/wagglevm/waggle/spec"
)

// Config is everything New needs to build a Machine.
type Config struct {
	// Spec describes the VM.
	Spec spec.Spec
	// Properties identify this VM instance to the guest (SMBIOS type 1).
	Properties Properties
	// Version is the VMM's version string, shown to the guest as the SMBIOS
	// BIOS and system version.
	Version string
	// Serial receives what the guest transmits on each COM port of the
	// spec. A missing or nil writer discards the output. Writers may block:
	// the Machine buffers between them and the vCPUs (and drops output a
	// stalled writer cannot take, see SerialDropped).
	Serial map[spec.SerialPortNumber]io.Writer
	// StorageRoot is the absolute path of the directory that the paths of
	// the spec's file storage backends are relative to (see
	// OpenStorageFile). It is required when the spec has a disk; no file
	// outside it is ever opened.
	StorageRoot string
	// Image, when set, is the boot image, used instead of looking up
	// Spec.Boot().Image among the images of package guest.
	Image []byte
	// Shell, when set, is the KVM VM to build on, made ahead with
	// NewShell; else New makes one. New takes it, whether it succeeds or
	// fails: the caller need not close it, and cannot use it again.
	Shell *Shell
	// Incoming builds a migration target: the image is not loaded and RAM is
	// left all zero, so that only what the source sends needs writing; the
	// machine's state comes from ImportState before Start. A reset later
	// boots the image as usual.
	Incoming bool
	// ExitOnReset ends the VM with ExitReset when the guest asks for a
	// reset, instead of rebooting it in place (like QEMU's -no-reboot).
	ExitOnReset bool
}

// Properties are the identity of a VM instance.
type Properties struct {
	// ID is the instance UUID (RFC 4122 byte order): the SMBIOS system
	// UUID.
	ID [16]byte
	// Name is the instance name: the serial number of the SMBIOS table
	// the VMM derives (the UUID's string form when Name is empty; see
	// DerivedSMBIOS).
	Name string
}

// uuidString formats a UUID in canonical form.
func uuidString(u [16]byte) string {
	return spec.KeyFromUUID(u).String()
}
