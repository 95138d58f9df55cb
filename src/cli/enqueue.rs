//! `jobctl enqueue` (one job, or NDJSON from a file or stdin) and `jobctl ping`:
//! straight into the database, or through the daemon's socket.

use super::*;

/// Jobs per transaction for `jobctl enqueue --file`: large enough that the commit costs
/// little per job, small enough that a bad line late in a big file loses little work.
const FILE_CHUNK: usize = 10_000;

impl Ctl {
    pub(super) fn enqueue(&self, args: EnqueueArgs, out: &mut dyn Write) -> CtlResult {
        if let Some(file) = &args.file {
            return self.enqueue_lines(file, out);
        }
        let text = match (&args.payload, &args.payload_file, &args.stdin) {
            (Some(text), _, _) => text.clone(),
            (None, Some(path), _) if path == Path::new("-") => read_stdin()?,
            (None, Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                CtlError::Usage(format!("cannot read payload file {}: {e}", path.display()))
            })?,
            (None, None, Some(_)) => read_stdin()?,
            (None, None, None) => "{}".to_string(),
        };
        let payload: Value = serde_json::from_str(&text)
            .map_err(|e| CtlError::Usage(format!("the payload is not valid JSON: {e}")))?;
        let run_at = match (&args.delay, &args.at) {
            (Some(delay), _) => Some(crate::clock::after(
                self.now,
                parse_duration(delay).map_err(|e| CtlError::Usage(format!("--delay: {e}")))?,
            )),
            (None, Some(at)) => {
                Some(parse_time(at).map_err(|e| CtlError::Usage(format!("--at: {e}")))?)
            }
            (None, None) => None,
        };
        let deadline_at = args
            .deadline
            .as_deref()
            .map(|d| parse_duration(d).map(|d| crate::clock::after(self.now, d)))
            .transpose()
            .map_err(|e| CtlError::Usage(format!("--deadline: {e}")))?;
        if args.via_socket {
            return self.enqueue_via_socket(&args, payload, run_at, deadline_at, out);
        }
        let job = NewJob {
            kind: args.kind.unwrap_or_default(),
            payload,
            queue: args.queue,
            priority: args.priority,
            run_at,
            max_attempts: args.max_attempts,
            unique_key: args.unique_key,
            deadline_at,
            parent_id: None,
            source: Some("jobctl".into()),
            destination: None,
            flow_key: None,
            order_key: args.order_key,
        };
        Registry::builtin()
            .validate(&job, &self.config)
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        let mut db = self.open_routed()?;
        let now = self.now;
        let enqueued = db.write(|tx| tx.enqueue(std::slice::from_ref(&job), now))?;
        let first = enqueued[0];
        if self.json {
            return print_json(out, &json!({"id": first.id, "duplicate": first.duplicate}));
        }
        if first.duplicate {
            say(
                out,
                &format!(
                    "{} (duplicate: a job with this unique key exists)",
                    first.id
                ),
            )
        } else {
            say(out, &first.id.to_string())
        }
    }

    /// `jobctl enqueue --file`: NDJSON jobs in chunks of [`FILE_CHUNK`], one transaction
    /// each, so a bad line or a failed write loses nothing already acknowledged and
    /// enqueues nothing of its own chunk.
    pub(super) fn enqueue_lines(&self, file: &Path, out: &mut dyn Write) -> CtlResult {
        use std::io::BufRead;
        let mut input: Box<dyn BufRead> = if file == Path::new("-") {
            Box::new(std::io::BufReader::with_capacity(
                256 * 1024,
                std::io::stdin(),
            ))
        } else {
            Box::new(std::io::BufReader::with_capacity(
                256 * 1024,
                std::fs::File::open(file)
                    .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", file.display())))?,
            ))
        };
        let name = if file == Path::new("-") {
            "standard input".to_string()
        } else {
            file.display().to_string()
        };
        let registry = Registry::builtin();
        let mut db = self.open_routed()?;
        let mut line = Vec::new();
        let mut number = 0usize;
        let mut chunk: Vec<NewJob> = Vec::with_capacity(FILE_CHUNK);
        let mut chunk_from = 1usize;
        let mut enqueued = 0usize;
        let mut ids = Vec::new();
        let mut duplicates = Vec::new();
        // Whatever went in before an error is said, so a script knows where to resume.
        let so_far = |enqueued: usize, from: usize| {
            if enqueued == 0 {
                "nothing was enqueued".to_string()
            } else {
                format!(
                    "the {enqueued} job(s) of lines 1 to {} are enqueued; nothing from line {from} on",
                    from - 1
                )
            }
        };
        loop {
            line.clear();
            let read = input
                .read_until(b'\n', &mut line)
                .map_err(|e| CtlError::Usage(format!("cannot read {name}: {e}")))?;
            if read > 0 {
                number += 1;
                if !line.iter().all(u8::is_ascii_whitespace) {
                    let job = crate::ingest::protocol::parse_job_line(&line, self.now, "jobctl")
                        .map_err(crate::handlers::Refusal::from)
                        .and_then(|job| registry.validate(&job, &self.config).map(|()| job))
                        .map_err(|e| {
                            CtlError::Usage(format!(
                                "{name} line {number}: {e}; {}",
                                so_far(enqueued, chunk_from)
                            ))
                        })?;
                    chunk.push(job);
                }
            }
            if chunk.len() == FILE_CHUNK || (read == 0 && !chunk.is_empty()) {
                let now = self.now;
                let written = db.write(|tx| tx.enqueue(&chunk, now)).map_err(|e| {
                    CtlError::Failure(format!(
                        "cannot enqueue lines {chunk_from} to {number}: {e}; {}",
                        so_far(enqueued, chunk_from)
                    ))
                })?;
                let mut text = String::with_capacity(written.len() * 12);
                for done in &written {
                    if self.json {
                        ids.push(done.id);
                        if done.duplicate {
                            duplicates.push(done.id);
                        }
                    } else if done.duplicate {
                        text.push_str(&format!(
                            "{} (duplicate: a job with this unique key exists)\n",
                            done.id
                        ));
                    } else {
                        text.push_str(&done.id.to_string());
                        text.push('\n');
                    }
                }
                out.write_all(text.as_bytes()).map_err(output_error)?;
                enqueued += chunk.len();
                chunk.clear();
                chunk_from = number + 1;
            }
            if read == 0 {
                break;
            }
        }
        if self.json {
            return print_json(
                out,
                &json!({"enqueued": enqueued, "ids": ids, "duplicates": duplicates}),
            );
        }
        Ok(())
    }
}

/// One request and its answer over the enqueue socket.
pub(super) fn socket_request(path: &Path, request: &Value) -> Result<Value, CtlError> {
    use std::io::BufRead;
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        CtlError::Failure(format!(
            "cannot reach jobd on {}: {e} (is the daemon running?)",
            path.display()
        ))
    })?;
    let timeout = Some(std::time::Duration::from_secs(30));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    // A daemon that refuses the connection (too many connections, a uid it does not
    // admit) writes why and closes, so the write may fail: its reason is read anyway.
    let written = writeln!(stream, "{request}");
    let mut line = String::new();
    let read = std::io::BufReader::new(&stream).read_line(&mut line);
    if let Err(e) = written {
        if serde_json::from_str::<Value>(&line).is_ok_and(|a| a["ok"] == false) {
            return Ok(serde_json::from_str(&line).expect("just parsed"));
        }
        return Err(CtlError::Failure(format!(
            "cannot write to {}: {e}",
            path.display()
        )));
    }
    read.map_err(|e| CtlError::Failure(format!("no answer from {}: {e}", path.display())))?;
    serde_json::from_str(&line).map_err(|e| {
        CtlError::Failure(format!(
            "jobd answered something that is not JSON ({e}): {line}"
        ))
    })
}

/// An error answer from the socket, as a jobctl error.
pub(super) fn socket_refusal(answer: &Value) -> CtlError {
    let code = answer["error"]["code"].as_str().unwrap_or("error");
    let message = answer["error"]["message"].as_str().unwrap_or("no message");
    let text = format!("{message} ({code})");
    match code {
        "invalid_json" | "invalid_request" | "invalid_job" | "unknown_kind" | "invalid_payload"
        | "line_too_long" | "batch_too_large" => CtlError::Usage(text),
        _ => CtlError::Failure(text),
    }
}

impl Ctl {
    pub(super) fn socket_path(&self, explicit: Option<PathBuf>) -> PathBuf {
        explicit.unwrap_or_else(|| self.config.daemon.socket.clone())
    }

    pub(super) fn ping(&self, socket: Option<PathBuf>, out: &mut dyn Write) -> CtlResult {
        let path = self.socket_path(socket);
        let started = std::time::Instant::now();
        let answer = socket_request(&path, &json!({"op": "ping"}))?;
        if answer["ok"] != json!(true) {
            return Err(socket_refusal(&answer));
        }
        let elapsed = started.elapsed();
        if self.json {
            return print_json(
                out,
                &json!({"socket": path, "version": answer["version"], "ms": elapsed.as_secs_f64() * 1000.0}),
            );
        }
        say(
            out,
            &format!(
                "jobd {} answers on {} ({:.1} ms)",
                answer["version"].as_str().unwrap_or("?"),
                path.display(),
                elapsed.as_secs_f64() * 1000.0
            ),
        )
    }

    pub(super) fn enqueue_via_socket(
        &self,
        args: &EnqueueArgs,
        payload: Value,
        run_at: Option<UnixMillis>,
        deadline_at: Option<UnixMillis>,
        out: &mut dyn Write,
    ) -> CtlResult {
        let mut job = json!({"kind": args.kind, "payload": payload, "queue": args.queue, "priority": args.priority});
        if let Some(run_at) = run_at {
            job["run_at"] = json!(run_at);
        }
        if let Some(deadline_at) = deadline_at {
            job["deadline_at"] = json!(deadline_at);
        }
        if let Some(max) = args.max_attempts {
            job["max_attempts"] = json!(max);
        }
        if let Some(key) = &args.unique_key {
            job["unique_key"] = json!(key);
        }
        if let Some(key) = &args.order_key {
            job["order_key"] = json!(key);
        }
        let path = self.socket_path(args.socket.clone());
        let answer = socket_request(&path, &json!({"op": "enqueue", "job": job}))?;
        if answer["ok"] != json!(true) {
            return Err(socket_refusal(&answer));
        }
        let id = answer["id"].as_i64().unwrap_or_default();
        let duplicate = answer["duplicate"] == json!(true);
        if self.json {
            return print_json(out, &json!({"id": id, "duplicate": duplicate}));
        }
        if duplicate {
            say(
                out,
                &format!("{id} (duplicate: a job with this unique key exists)"),
            )
        } else {
            say(out, &id.to_string())
        }
    }
}
