package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func sampleTask() *Task {
	return &Task{
		Header: NewHeader(),
		Pid:    1, Pgid: 1, Sid: 1, Comm: "counter",
		Threads: []Thread{{Tid: 1, Regs: make([]byte, RegsSize), XState: make([]byte, 832), Sigmask: 1 << 9}},
		Mm: &Mm{
			Brk: 0x4000, PagesFile: PagesFile(1), PagesSize: 3 * PageSize,
			Vmas: []Vma{
				{Start: 0x400000, End: 0x401000, Prot: ProtRead | ProtExec, Kind: VmaFile, Path: "/bin/x"},
				{Start: 0x600000, End: 0x604000, Prot: ProtRead | ProtWrite, Kind: VmaAnon,
					Pages: []PageRun{{Addr: 0x600000, Len: PageSize, Off: 0}, {Addr: 0x602000, Len: 2 * PageSize, Off: PageSize}}},
			},
		},
		Fds: []Fd{{Fd: 0, Kind: FdDevice, Path: "/dev/null", Flags: 2}, {Fd: 3, Kind: FdFile, Path: "/tmp/f", Pos: 42, File: 7}},
		Cwd: "/", Root: "/",
	}
}

func TestTaskRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := sampleTask()
	if err := WriteFile(dir, TaskFile(1), want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, TaskFile(1)))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("got mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadTask(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	if !bytes.Equal(a, b) {
		t.Fatalf("round trip differs:\n got %s\nwant %s", a, b)
	}
	if _, err := ReadTask(dir, 2); err == nil {
		t.Fatal("reading a missing task succeeded")
	}
}

func TestTaskRejects(t *testing.T) {
	cases := map[string]func(*Task){
		"magic":         func(t *Task) { t.Magic = "criu" },
		"version":       func(t *Task) { t.Version = 99 },
		"unaligned vma": func(t *Task) { t.Mm.Vmas[0].End = 0x400800 },
		"overlap":       func(t *Task) { t.Mm.Vmas[1].Start = 0x400000 },
		"run outside":   func(t *Task) { t.Mm.Vmas[1].Pages[1].Len = 4 * PageSize },
		"run past file": func(t *Task) { t.Mm.PagesSize = PageSize },
		"regs size":     func(t *Task) { t.Threads[0].Regs = t.Threads[0].Regs[:10] },
		"dup fd":        func(t *Task) { t.Fds[1].Fd = 0 },
		"relative path": func(t *Task) { t.Fds[1].Path = "tmp/f" },
		"fd kind":       func(t *Task) { t.Fds[1].Kind = "socket" },
		"leader":        func(t *Task) { t.Threads[0].Tid = 5 },
		"signal":        func(t *Task) { t.Sigactions = []Sigaction{{Signal: 65}} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			task := sampleTask()
			mutate(task)
			data, err := json.Marshal(task)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeTask(bytes.NewReader(data)); !errors.Is(err, ErrFormat) {
				t.Fatalf("got %v, want ErrFormat", err)
			}
		})
	}
}

func TestInventoryRejects(t *testing.T) {
	good := Inventory{Header: NewHeader(), RootPid: 1, Tasks: []int{1, 5}, Pipes: []Pipe{{ID: 3, Size: 4096, Data: []byte("hi")}}}
	data, _ := json.Marshal(good)
	if _, err := DecodeInventory(bytes.NewReader(data)); err != nil {
		t.Fatalf("good inventory: %v", err)
	}
	for name, mutate := range map[string]func(*Inventory){
		"root not first": func(i *Inventory) { i.Tasks = []int{5, 1} },
		"repeated task":  func(i *Inventory) { i.Tasks = []int{1, 1} },
		"pipe overflow":  func(i *Inventory) { i.Pipes[0].Size = 1 },
	} {
		inv := good
		inv.Pipes = append([]Pipe(nil), good.Pipes...)
		mutate(&inv)
		data, _ := json.Marshal(inv)
		if _, err := DecodeInventory(bytes.NewReader(data)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: got %v, want ErrFormat", name, err)
		}
	}
}

func FuzzDecodeTask(f *testing.F) {
	data, _ := json.Marshal(sampleTask())
	f.Add(data)
	f.Add([]byte(`{"magic":"cryo-engine-image","version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		task, err := DecodeTask(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever decodes must survive a second validation unchanged.
		if err := task.Validate(); err != nil {
			t.Fatalf("decoded task fails validation: %v", err)
		}
	})
}

func FuzzDecodeInventory(f *testing.F) {
	f.Add([]byte(`{"magic":"cryo-engine-image","version":1,"root_pid":1,"tasks":[1]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if inv, err := DecodeInventory(bytes.NewReader(data)); err == nil {
			if err := inv.Validate(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
