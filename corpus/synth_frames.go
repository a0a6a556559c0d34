package corpus

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"github.com/wagglevm/waggle/server/migration"
	"github.com/wagglevm/waggle/server/serialhistory"
	"github.com/wagglevm/waggle/versions"
	"github.com/wagglevm/waggle/vmm"
	"github.com/wagglevm/waggle/vmm/devices"
)

func specVersionNames() []string { return versions.Names() }

// frameSecret is the migration secret of the synthesized handshake.
const frameSecret = "corpus-secret-corpus-secret-corpus-secret-0"

// synthFrames returns one frame of every message type, named, as this
// build's encoders write them. The handshake (Hello, Welcome, Proof) is
// what the protocol owners may still change before a release: the corpus of
// a version in development is simply regenerated then. The Hello offers
// the payload versions of imp.
func synthFrames(imp map[string][]uint32) (map[string]migration.Frame, error) {
	id := [16]byte(migrationID)
	var tn, sn [migration.NonceSize]byte
	for i := range tn {
		tn[i], sn[i] = byte(i), byte(0xff-i)
	}
	var devs []migration.DeviceVersions
	for _, k := range sortedKeys(imp) {
		devs = append(devs, migration.DeviceVersions{Kind: k, Versions: imp[k]})
	}
	hello := migration.Hello{MigrationID: id, Nonce: tn, Protocols: migration.Supported, SpecVersions: versions.Names(), Devices: devs}
	welcome := migration.Welcome{Protocol: migration.ProtocolV1, Nonce: sn,
		Proof: migration.Prove(frameSecret, migration.RoleSource, id, tn, sn)}
	proof := migration.Proof{Proof: migration.Prove(frameSecret, migration.RoleTarget, id, tn, sn)}

	specs, err := synthSpecs()
	if err != nil {
		return nil, err
	}
	env, err := versions.Wrap(specs[3].spec, []string{versions.Names()[0]})
	if err != nil {
		return nil, err
	}
	envData, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	page := bytes.Repeat([]byte{0xa5}, 4096)
	u, err := devices.NewUART(1, nopIRQ{}, nil)
	if err != nil {
		return nil, err
	}
	up, err := u.Save(0)
	if err != nil {
		return nil, err
	}
	st, err := synthMachine(1, true, false)
	if err != nil {
		return nil, err
	}
	mach, err := st.MarshalBinary()
	if err != nil {
		return nil, err
	}
	out := map[string]migration.Frame{
		"hello":           {Type: migration.TypeHello, Payload: hello.Encode()},
		"welcome":         {Type: migration.TypeWelcome, Payload: welcome.Encode()},
		"proof":           {Type: migration.TypeProof, Payload: proof.Encode()},
		"preamble":        {Type: migration.TypePreamble, Payload: migration.Preamble{Envelope: envData}.Encode()},
		"ready":           {Type: migration.TypeReady},
		"ram-two-pages":   {Type: migration.TypeRAM, Payload: migration.RAM{GPA: 0x10_0000, Data: append(page, page...)}.Encode()},
		"zero":            {Type: migration.TypeZero, Payload: migration.Zero{GPA: 0x20_0000, Pages: 512}.Encode()},
		"round-end":       {Type: migration.TypeRoundEnd, Payload: migration.RoundEnd{Round: 1}.Encode()},
		"round-end-final": {Type: migration.TypeRoundEnd, Payload: migration.RoundEnd{Round: 4, Final: true}.Encode()},
		"round-ack":       {Type: migration.TypeRoundAck, Payload: migration.RoundAck{Round: 1}.Encode()},
		"plan": {Type: migration.TypePlan, Payload: migration.Plan{Ranges: []migration.PlanRange{
			{GPA: 0, Pages: 160}, {GPA: 0x10_0000, Pages: 3}, {GPA: 0x20_0000, Pages: 512}}}.Encode()},
		"device-uart": {Type: migration.TypeDevice, Payload: migration.Device{Key: "com1", Kind: up.Kind, Version: up.Version, Data: up.Data}.Encode()},
		"machine":     {Type: migration.TypeMachine, Payload: migration.Machine{Version: vmm.StateVersion, Data: mach}.Encode()},
		"state-done":  {Type: migration.TypeStateDone},
		"imported":    {Type: migration.TypeImported},
		"commit":      {Type: migration.TypeCommit, Payload: migration.Commit{PausedFor: 640 * time.Microsecond}.Encode()},
	}
	for code := migration.AbortFailed; code <= migration.AbortNoCommonProtocol; code++ {
		out["abort-"+code.String()] = migration.Frame{Type: migration.TypeAbort,
			Payload: migration.Abort{Code: code, Reason: "corpus: " + code.String()}.Encode()}
	}
	return out, nil
}

func addFrames(set fileSet, imp map[string][]uint32) error {
	frames, err := synthFrames(imp)
	if err != nil {
		return err
	}
	for _, name := range sortedKeys(frames) {
		f := frames[name]
		var b bytes.Buffer
		if err := migration.WriteFrame(&b, f.Type, f.Payload); err != nil {
			return err
		}
		if err := set.addJSON(KindFrame, name, FrameFile{Type: f.Type.String(), Frame: b.Bytes()}); err != nil {
			return err
		}
	}
	return nil
}

// addStateFiles records the binary state a server writes: device
// payloads, machine state, stream frames and what the build reads, imp
// (the payload kinds and versions its Hello offers). A server that offers
// the serial history (v2's) has its payloads and frames recorded too.
func addStateFiles(set fileSet, imp map[string][]uint32) error {
	tmp, err := os.MkdirTemp("", "corpusgen-")
	if err != nil {
		return fmt.Errorf("temporary directory for disk files: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, step := range []func(fileSet) error{
		func(s fileSet) error { return addDevices(s, tmp) }, addMachine,
		func(s fileSet) error { return addVersions(s, imp) },
		func(s fileSet) error { return addFrames(s, imp) },
	} {
		if err := step(set); err != nil {
			return err
		}
	}
	if _, ok := imp[serialhistory.Kind]; ok {
		return addSerialHistoryState(set)
	}
	return nil
}
