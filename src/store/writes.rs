//! [`impl_writes!`]: how both backends write call records. Every write goes
//! through one function on a connection, either a pooled one (each write on its
//! own) or a transaction's (a writer's group, layer by layer, as multi-row
//! statements from `batch.rs`). Expanded next to [`super::backend::impl_store`],
//! which calls these from the `Store` methods.

/// Adds the write helpers to `$store` (a struct with a `writer()` pool);
/// `$backend` is `"sqlite"` or `"postgres"`.
macro_rules! impl_writes {
    ($store:ty, $db:ty, $backend:literal) => {
        impl $store {
            /// Runs one write on `conn` (a pooled connection or a transaction's);
            /// the calls whose rows it writes or ends go to `changes`, for the
            /// caller to apply once the write is committed.
            async fn write_on(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: $crate::store::Write<'_>,
                changes: &mut $crate::store::KnownChanges,
            ) -> Result<(), sqlx::Error> {
                use $crate::store::Write;
                match write {
                    Write::CallStarted(call) => {
                        self.write_starts(&mut *conn, &[call], changes).await?;
                    }
                    Write::Turn(call_sid, turn) => {
                        self.write_turns(&mut *conn, &[(call_sid, turn)], changes)
                            .await?;
                    }
                    Write::Interrupted {
                        call_sid,
                        seq,
                        heard,
                    } => {
                        sqlx::query($crate::store::sql::MARK_INTERRUPTED)
                            .bind(call_sid)
                            .bind(seq)
                            .bind(heard)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Write::ToolCall(call_sid, tool_call) => {
                        self.ensure_call(&mut *conn, call_sid, tool_call.started_at, changes)
                            .await?;
                        sqlx::query($crate::store::sql::ADD_TOOL_CALL)
                            .bind(call_sid)
                            .bind(tool_call.seq)
                            .bind(&tool_call.name)
                            .bind(&tool_call.arguments)
                            .bind(&tool_call.result)
                            .bind(tool_call.ok)
                            .bind(tool_call.started_at)
                            .bind(tool_call.duration_ms)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Write::Appointment(a) => {
                        self.ensure_call(&mut *conn, &a.call_sid, a.created_at, changes)
                            .await?;
                        sqlx::query($crate::store::sql::ADD_APPOINTMENT)
                            .bind(&a.call_sid)
                            .bind(a.seq)
                            .bind(&a.caller_number)
                            .bind(&a.name)
                            .bind(&a.email)
                            .bind(&a.preferred_day)
                            .bind(&a.preferred_time)
                            .bind(&a.phone)
                            .bind(&a.notes)
                            .bind(a.created_at)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Write::CallEnded(call_sid, end) => {
                        self.write_ends(&mut *conn, &[(call_sid, end)], changes)
                            .await?;
                    }
                    Write::AnsweredBy(call_sid, detection) => {
                        sqlx::query($crate::store::sql::SET_ANSWERED_BY)
                            .bind(call_sid)
                            .bind(&detection.what)
                            .bind(&detection.signal)
                            .bind(detection.at)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Write::RecordingPath(call_sid, path) => {
                        sqlx::query($crate::store::sql::SET_RECORDING_PATH)
                            .bind(call_sid)
                            .bind(path)
                            .bind($crate::store::now_millis())
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                Ok(())
            }

            /// Makes sure the call's row exists, unless it is known to.
            async fn ensure_call(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                call_sid: &str,
                at: i64,
                changes: &mut $crate::store::KnownChanges,
            ) -> Result<(), sqlx::Error> {
                if changes.contains(&self.known, call_sid) {
                    return Ok(());
                }
                sqlx::query($crate::store::sql::ENSURE_CALL)
                    .bind(call_sid)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                changes.insert(call_sid);
                Ok(())
            }

            /// Writes `turns` in as few statements as it can, after making sure
            /// their calls' rows exist.
            async fn write_turns(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                turns: &[(&str, &$crate::store::Turn)],
                changes: &mut $crate::store::KnownChanges,
            ) -> Result<(), sqlx::Error> {
                use $crate::store::batch;
                for (call_sid, turn) in turns {
                    self.ensure_call(&mut *conn, call_sid, turn.started_at, changes)
                        .await?;
                }
                for run in batch::distinct_runs(turns, |(sid, t)| (*sid, t.seq)) {
                    let mut rest = run;
                    for size in batch::chunks(run.len()) {
                        let (chunk, tail) = rest.split_at(size);
                        rest = tail;
                        let mut query = sqlx::query(batch::TURNS.sql(size, $backend == "postgres"));
                        for (call_sid, turn) in chunk {
                            query = query
                                .bind(*call_sid)
                                .bind(turn.seq)
                                .bind(&turn.role)
                                .bind(&turn.text)
                                .bind(turn.interrupted)
                                .bind(&turn.heard)
                                .bind(turn.started_at)
                                .bind(turn.ended_at)
                                .bind(turn.time_to_first_token_ms)
                                .bind(turn.llm_first_token_ms)
                                .bind(turn.partial);
                        }
                        query.execute(&mut *conn).await?;
                    }
                }
                Ok(())
            }

            /// Writes the starts of `calls` in as few statements as it can.
            async fn write_starts(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                calls: &[&$crate::store::NewCall],
                changes: &mut $crate::store::KnownChanges,
            ) -> Result<(), sqlx::Error> {
                use $crate::store::batch;
                for run in batch::distinct_runs(calls, |c| c.call_sid.as_str()) {
                    let mut rest = run;
                    for size in batch::chunks(run.len()) {
                        let (chunk, tail) = rest.split_at(size);
                        rest = tail;
                        let mut query =
                            sqlx::query(batch::CALLS_STARTED.sql(size, $backend == "postgres"));
                        for call in chunk {
                            query = query
                                .bind(&call.call_sid)
                                .bind(&call.session_id)
                                .bind(&call.from)
                                .bind(&call.to)
                                .bind(&call.direction)
                                .bind(&call.mode)
                                .bind("in-progress")
                                .bind(&call.parameters)
                                .bind(call.started_at)
                                .bind(call.started_at)
                                .bind(&call.owner)
                                .bind(&call.agent);
                        }
                        query.execute(&mut *conn).await?;
                    }
                }
                for call in calls {
                    changes.insert(&call.call_sid);
                }
                Ok(())
            }

            /// Closes the records of `ends` in as few statements as it can.
            async fn write_ends(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                ends: &[(&str, &$crate::store::CallEnd)],
                changes: &mut $crate::store::KnownChanges,
            ) -> Result<(), sqlx::Error> {
                use $crate::store::batch;
                for run in batch::distinct_runs(ends, |(sid, _)| *sid) {
                    let mut rest = run;
                    for size in batch::chunks(run.len()) {
                        let (chunk, tail) = rest.split_at(size);
                        rest = tail;
                        let mut query =
                            sqlx::query(batch::CALLS_ENDED.sql(size, $backend == "postgres"));
                        for (call_sid, end) in chunk {
                            query = query
                                .bind(*call_sid)
                                .bind(&end.status)
                                .bind(end.ended_at)
                                .bind(end.ended_at)
                                .bind(0i64)
                                .bind(&end.handoff_data)
                                .bind(end.turns)
                                .bind(end.interrupts)
                                .bind(end.errors)
                                .bind(end.ended_at);
                        }
                        query.execute(&mut *conn).await?;
                    }
                }
                for (call_sid, _) in ends {
                    changes.remove(call_sid);
                }
                Ok(())
            }

            /// One write on its own (committed by itself).
            async fn write_one(
                &self,
                write: $crate::store::Write<'_>,
            ) -> $crate::store::StoreResult<()> {
                let mut conn = self.writer().acquire().await?;
                let mut changes = $crate::store::KnownChanges::default();
                self.write_on(&mut conn, write, &mut changes).await?;
                self.known.commit(changes);
                Ok(())
            }
        }
    };
}

pub(crate) use impl_writes;
