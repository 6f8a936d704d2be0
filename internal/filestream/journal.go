package filestream

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
)

// The journal: a record of the transfers completed in the destination directory, so
// that a restarted Receiver recognizes the chunks a broker delivers again after a
// restart (its committed position lags the acknowledgements) as ErrAlreadyReceived
// rather than as chunks of an unknown transfer. One line per transfer, its ID (as the
// broker shows it anyway; nothing of the file). It keeps the last maxEnded transfers.

const journalName = partialPrefix + journalSuffix

// maxJournalRead bounds what loadJournal reads: the last maxEnded lines, with room.
const maxJournalRead = 4 * maxEnded * (idTextLen + 1)

// loadJournal reads the journal into r.ended, and rewrites it shorter when it has grown.
func (r *Receiver) loadJournal() error {
	f, err := r.root.Open(journalName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return storage("open "+journalName, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return storage("stat "+journalName, err)
	}
	off := max(0, fi.Size()-maxJournalRead)
	data, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return storage("read "+journalName, err)
	}
	if off > 0 { // the first line read is probably cut
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	var ids []transferID
	for line := range bytes.Lines(data) {
		var id transferID
		if len(line) != idTextLen+1 || line[idTextLen] != '\n' || !decodeID(&id, string(line[:idTextLen])) {
			continue // a line torn by a crash, or not ours
		}
		ids = append(ids, id)
	}
	for _, id := range ids[max(0, len(ids)-maxEnded):] {
		r.remember(id, ending{completed: true})
	}
	r.journalLines = len(ids)
	if off > 0 || len(ids) > 2*maxEnded {
		r.compactJournal()
	}
	return nil
}

// recordCompleted appends transfer id to the journal. A failure is logged, not returned:
// the file is in place, and a Receiver that does not know it was completed only receives
// redelivered chunks as unknown (or, from chunk 0, again).
func (r *Receiver) recordCompleted(id transferID) {
	err := r.appendJournal([]byte(id.String() + "\n"))
	if err != nil {
		r.log.Warn("filestream: recording a completed transfer", "transfer", id.String(), "error", err)
		return
	}
	if r.journalLines++; r.journalLines > 2*maxEnded {
		r.compactJournal()
	}
}

func (r *Receiver) appendJournal(line []byte) error {
	f, err := r.root.OpenFile(journalName, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(line); err != nil {
		f.Close()
		return err
	}
	if err := syncData(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// compactJournal rewrites the journal with the transfers r remembers as completed.
func (r *Receiver) compactJournal() {
	var buf bytes.Buffer
	n := 0
	for _, e := range r.order {
		if cur, ok := r.ended[e.id]; ok && cur.seq == e.seq && cur.completed {
			buf.WriteString(e.id.String())
			buf.WriteByte('\n')
			n++
		}
	}
	tmp := journalName + tmpSuffix
	err := func() error {
		f, err := r.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := f.Write(buf.Bytes()); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return r.root.Rename(tmp, journalName)
	}()
	if err != nil {
		r.root.Remove(tmp)
		r.log.Warn("filestream: compacting the record of completed transfers", "error", err)
		return
	}
	r.journalLines = n
}
