//! [`impl_store!`]: the one implementation of [`super::Store`] both backends expand
//! over their own pool, running the statements of `sql.rs` and `batch.rs`, and the
//! mapping of rows to records. The writes themselves are in `writes.rs`.

/// Implements [`super::Store`] for `$store`, a struct with a `pool: sqlx::Pool<$db>`,
/// a `writer()` pool for the recorder's writes (and its reads of where a call's
/// numbering stands, so that a burst of starting calls takes no reader
/// connection) and a `describe()` method. Both backends expand the same code
/// over the same SQL.
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal) => {
        impl $store {
            fn call_from_row(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::store::Call, sqlx::Error> {
                use sqlx::Row as _;
                let recording = $crate::store::Recording {
                    sid: row.try_get("recording_sid")?,
                    url: row.try_get("recording_url")?,
                    duration_secs: row.try_get("recording_duration_secs")?,
                    path: row.try_get("recording_path")?,
                };
                Ok($crate::store::Call {
                    call_sid: row.try_get("call_sid")?,
                    session_id: row.try_get("session_id")?,
                    from: row.try_get("from_number")?,
                    to: row.try_get("to_number")?,
                    direction: row.try_get("direction")?,
                    mode: row.try_get("mode")?,
                    agent: row.try_get("agent")?,
                    status: row.try_get("status")?,
                    parameters: row.try_get("parameters")?,
                    started_at: row.try_get("started_at")?,
                    ended_at: row.try_get("ended_at")?,
                    duration_ms: row.try_get("duration_ms")?,
                    twilio_duration_secs: row.try_get("twilio_duration_secs")?,
                    answered_by: row.try_get("answered_by")?,
                    answered_by_signal: row.try_get("answered_by_signal")?,
                    answered_at: row.try_get("answered_at")?,
                    handoff_data: row.try_get("handoff_data")?,
                    turns: row.try_get("turns")?,
                    interrupts: row.try_get("interrupts")?,
                    errors: row.try_get("errors")?,
                    recording: (!recording.is_empty()).then_some(recording),
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn appointment_from_row(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::store::Appointment, sqlx::Error> {
                use sqlx::Row as _;
                Ok($crate::store::Appointment {
                    id: row.try_get("id")?,
                    call_sid: row.try_get("call_sid")?,
                    seq: row.try_get("seq")?,
                    caller_number: row.try_get("caller_number")?,
                    name: row.try_get("name")?,
                    email: row.try_get("email")?,
                    preferred_day: row.try_get("preferred_day")?,
                    preferred_time: row.try_get("preferred_time")?,
                    phone: row.try_get("phone")?,
                    notes: row.try_get("notes")?,
                    created_at: row.try_get("created_at")?,
                })
            }
        }

        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            fn describe(&self) -> String {
                <$store>::describe(self)
            }

            fn ping(&self) -> futures::future::BoxFuture<'_, $crate::store::StoreResult<()>> {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                })
            }
            fn upsert_status<'a>(
                &'a self,
                u: &'a $crate::store::StatusUpdate,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<()>> {
                Box::pin(async move {
                    sqlx::query($crate::store::sql::UPSERT_STATUS)
                        .bind(&u.call_sid)
                        .bind(&u.from)
                        .bind(&u.to)
                        .bind(&u.direction)
                        .bind(&u.status)
                        .bind(u.duration_secs)
                        .bind(&u.answered_by)
                        .bind(u.at)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn set_recording<'a>(
                &'a self,
                call_sid: &'a str,
                r: &'a $crate::store::Recording,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<()>> {
                Box::pin(async move {
                    sqlx::query($crate::store::sql::SET_RECORDING)
                        .bind(call_sid)
                        .bind(&r.sid)
                        .bind(&r.url)
                        .bind(r.duration_secs)
                        .bind($crate::store::now_millis())
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn write<'a>(
                &'a self,
                write: $crate::store::Write<'a>,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<()>> {
                Box::pin(self.write_one(write))
            }

            fn write_batch<'a>(
                &'a self,
                writes: &'a [$crate::store::Write<'a>],
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<()>> {
                Box::pin(async move {
                    use $crate::store::Write;
                    let mut tx = self.writer().begin().await?;
                    let mut changes = $crate::store::KnownChanges::default();
                    // Layer by layer (each call's order kept), each kind of write in a
                    // layer as multi-row statements.
                    for layer in $crate::store::batch::layers(writes) {
                        let mut starts = Vec::new();
                        let mut turns = Vec::new();
                        let mut ends = Vec::new();
                        let mut others = Vec::new();
                        for write in layer {
                            match write {
                                Write::CallStarted(call) => starts.push(call),
                                Write::Turn(sid, turn) => turns.push((sid, turn)),
                                Write::CallEnded(sid, end) => ends.push((sid, end)),
                                other => others.push(other),
                            }
                        }
                        self.write_starts(&mut tx, &starts, &mut changes).await?;
                        self.write_turns(&mut tx, &turns, &mut changes).await?;
                        for write in others {
                            self.write_on(&mut tx, write, &mut changes).await?;
                        }
                        self.write_ends(&mut tx, &ends, &mut changes).await?;
                    }
                    tx.commit().await?;
                    // Only now: a rolled-back batch leaves no call believed written.
                    self.known.commit(changes);
                    Ok(())
                })
            }
            fn next_seqs<'a>(
                &'a self,
                call_sid: &'a str,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<$crate::store::NextSeqs>>
            {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query($crate::store::sql::NEXT_SEQS)
                        .bind(call_sid)
                        .fetch_one(self.writer())
                        .await?;
                    Ok($crate::store::NextSeqs {
                        tool_call: row.try_get("next_tool_call")?,
                        appointment: row.try_get("next_appointment")?,
                        turn: row.try_get("next_turn")?,
                    })
                })
            }

            fn next_seqs_many<'a>(
                &'a self,
                call_sids: &'a [&'a str],
            ) -> futures::future::BoxFuture<
                'a,
                $crate::store::StoreResult<
                    std::collections::HashMap<String, $crate::store::NextSeqs>,
                >,
            > {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let mut found = std::collections::HashMap::new();
                    let mut rest = call_sids;
                    for size in $crate::store::batch::chunks(call_sids.len()) {
                        let (chunk, tail) = rest.split_at(size);
                        rest = tail;
                        let numbered = $backend == "postgres";
                        let list: Vec<String> = (1..=size)
                            .map(|i| {
                                if numbered {
                                    format!("${i}")
                                } else {
                                    "?".into()
                                }
                            })
                            .collect();
                        let sql = format!(
                            "{}({})",
                            $crate::store::sql::NEXT_SEQS_MANY,
                            list.join(", ")
                        );
                        let mut query = sqlx::query(&sql);
                        for sid in chunk {
                            query = query.bind(*sid);
                        }
                        for row in query.fetch_all(self.writer()).await? {
                            found.insert(
                                row.try_get::<String, _>("call_sid")?,
                                $crate::store::NextSeqs {
                                    tool_call: row.try_get("next_tool_call")?,
                                    appointment: row.try_get("next_appointment")?,
                                    turn: row.try_get("next_turn")?,
                                },
                            );
                        }
                    }
                    Ok(found)
                })
            }

            fn list_calls<'a>(
                &'a self,
                limit: u32,
                before: Option<&'a $crate::store::CallCursor>,
                filter: &'a $crate::store::CallFilter,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<$crate::store::CallPage>>
            {
                Box::pin(async move {
                    // One more than asked tells whether another page follows.
                    let fetch = i64::from(limit) + 1;
                    let (at, sid) = match before {
                        Some(cursor) => (cursor.started_at, cursor.call_sid.as_str()),
                        None => (i64::MAX, ""),
                    };
                    let rows = sqlx::query($crate::store::sql::LIST_CALLS)
                        .bind(fetch)
                        .bind(at)
                        .bind(sid)
                        .bind(filter.status.as_deref())
                        .bind(filter.mode.as_deref())
                        .bind(filter.number.as_deref())
                        .bind(filter.since.unwrap_or(i64::MIN))
                        .bind(filter.until.unwrap_or(i64::MAX))
                        .bind(filter.agent.as_deref())
                        .fetch_all(&self.pool)
                        .await?;
                    let mut calls = rows
                        .iter()
                        .map(Self::call_from_row)
                        .collect::<Result<Vec<_>, _>>()?;
                    let more = calls.len() > limit as usize;
                    calls.truncate(limit as usize);
                    let next =
                        more.then(|| calls.last())
                            .flatten()
                            .map(|c| $crate::store::CallCursor {
                                started_at: c.started_at,
                                call_sid: c.call_sid.clone(),
                            });
                    Ok($crate::store::CallPage { calls, next })
                })
            }

            fn get_call<'a>(
                &'a self,
                call_sid: &'a str,
            ) -> futures::future::BoxFuture<
                'a,
                $crate::store::StoreResult<Option<$crate::store::CallDetail>>,
            > {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let row = sqlx::query($crate::store::sql::GET_CALL)
                        .bind(call_sid)
                        .fetch_optional(&self.pool)
                        .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    Ok(Some($crate::store::CallDetail {
                        call: Self::call_from_row(&row)?,
                        transcript_turns: row.try_get("n_turns")?,
                        tool_calls: row.try_get("n_tool_calls")?,
                        appointments: row.try_get("n_appointments")?,
                    }))
                })
            }

            fn transcript_page<'a>(
                &'a self,
                call_sid: &'a str,
                after: Option<i64>,
                limit: u32,
            ) -> futures::future::BoxFuture<
                'a,
                $crate::store::StoreResult<Option<$crate::store::Transcript>>,
            > {
                Box::pin(async move {
                    use sqlx::Row as _;
                    let exists = sqlx::query($crate::store::sql::CALL_EXISTS)
                        .bind(call_sid)
                        .fetch_optional(&self.pool)
                        .await?;
                    if exists.is_none() {
                        return Ok(None);
                    }
                    // One more than asked tells whether another page follows.
                    let mut turns = sqlx::query($crate::store::sql::TURNS)
                        .bind(call_sid)
                        .bind(after.unwrap_or(-1))
                        .bind(i64::from(limit).saturating_add(1))
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|row| {
                            Ok::<_, sqlx::Error>($crate::store::Turn {
                                seq: row.try_get("seq")?,
                                role: row.try_get("role")?,
                                text: row.try_get("text")?,
                                interrupted: row.try_get("interrupted")?,
                                heard: row.try_get("heard")?,
                                started_at: row.try_get("started_at")?,
                                ended_at: row.try_get("ended_at")?,
                                time_to_first_token_ms: row.try_get("time_to_first_token_ms")?,
                                llm_first_token_ms: row.try_get("llm_first_token_ms")?,
                                partial: row.try_get("partial")?,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let next = (turns.len() > limit as usize)
                        .then(|| turns.pop())
                        .flatten();
                    let from = match after {
                        None => i64::MIN,
                        Some(_) => turns.first().map_or(i64::MAX, |t| t.started_at),
                    };
                    let until = next.as_ref().map_or(i64::MAX, |t| t.started_at);
                    let next_after = next.and(turns.last().map(|t| t.seq));
                    let tool_calls = sqlx::query($crate::store::sql::TOOL_CALLS)
                        .bind(call_sid)
                        .bind(from)
                        .bind(until)
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|row| {
                            Ok::<_, sqlx::Error>($crate::store::ToolCall {
                                seq: row.try_get("seq")?,
                                name: row.try_get("name")?,
                                arguments: row.try_get("arguments")?,
                                result: row.try_get("result")?,
                                ok: row.try_get("ok")?,
                                started_at: row.try_get("started_at")?,
                                duration_ms: row.try_get("duration_ms")?,
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Some($crate::store::Transcript {
                        turns,
                        tool_calls,
                        next_after,
                    }))
                })
            }

            fn overview(
                &self,
                since: $crate::store::Millis,
            ) -> futures::future::BoxFuture<'_, $crate::store::StoreResult<$crate::store::Overview>>
            {
                /// The latest replies whose first-token latency is drawn.
                const FIRST_TOKENS: i64 = 2000;
                Box::pin(async move {
                    use sqlx::Row as _;
                    let per_hour = |sql: &'static str| async move {
                        let rows = sqlx::query(sql).bind(since).fetch_all(&self.pool).await?;
                        rows.iter()
                            .map(|row| {
                                Ok((
                                    row.try_get::<i64, _>("hour")? * 3_600_000,
                                    row.try_get::<i64, _>("n")?,
                                ))
                            })
                            .collect::<Result<Vec<_>, sqlx::Error>>()
                    };
                    let calls_per_hour = per_hour($crate::store::sql::CALLS_PER_HOUR).await?;
                    let replies_per_hour = per_hour($crate::store::sql::REPLIES_PER_HOUR).await?;
                    let by_status = sqlx::query($crate::store::sql::CALLS_BY_STATUS)
                        .bind(since)
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|row| Ok((row.try_get("status")?, row.try_get("n")?)))
                        .collect::<Result<Vec<_>, sqlx::Error>>()?;
                    let first_token_ms = sqlx::query($crate::store::sql::RECENT_FIRST_TOKENS)
                        .bind(since)
                        .bind(FIRST_TOKENS)
                        .fetch_all(&self.pool)
                        .await?
                        .iter()
                        .map(|row| row.try_get("time_to_first_token_ms"))
                        .collect::<Result<Vec<i64>, sqlx::Error>>()?;
                    Ok($crate::store::Overview {
                        calls_per_hour,
                        replies_per_hour,
                        by_status,
                        first_token_ms,
                    })
                })
            }

            fn call_appointments<'a>(
                &'a self,
                call_sid: &'a str,
            ) -> futures::future::BoxFuture<
                'a,
                $crate::store::StoreResult<Vec<$crate::store::Appointment>>,
            > {
                Box::pin(async move {
                    let rows = sqlx::query($crate::store::sql::CALL_APPOINTMENTS)
                        .bind(call_sid)
                        .fetch_all(&self.pool)
                        .await?;
                    Ok(rows
                        .iter()
                        .map(Self::appointment_from_row)
                        .collect::<Result<Vec<_>, _>>()?)
                })
            }

            fn list_appointments(
                &self,
                limit: u32,
                before: Option<i64>,
            ) -> futures::future::BoxFuture<
                '_,
                $crate::store::StoreResult<$crate::store::AppointmentPage>,
            > {
                Box::pin(async move {
                    let fetch = i64::from(limit) + 1;
                    let rows = match before {
                        None => {
                            sqlx::query($crate::store::sql::LIST_APPOINTMENTS)
                                .bind(fetch)
                                .fetch_all(&self.pool)
                                .await?
                        }
                        Some(id) => {
                            sqlx::query($crate::store::sql::LIST_APPOINTMENTS_BEFORE)
                                .bind(fetch)
                                .bind(id)
                                .fetch_all(&self.pool)
                                .await?
                        }
                    };
                    let mut appointments = rows
                        .iter()
                        .map(Self::appointment_from_row)
                        .collect::<Result<Vec<_>, _>>()?;
                    let more = appointments.len() > limit as usize;
                    appointments.truncate(limit as usize);
                    let next_before = more.then(|| appointments.last().map(|a| a.id)).flatten();
                    Ok($crate::store::AppointmentPage {
                        appointments,
                        next_before,
                    })
                })
            }

            fn notify<'a>(
                &'a self,
                payload: &'a str,
            ) -> futures::future::BoxFuture<'a, $crate::store::StoreResult<bool>> {
                Box::pin(self.notify_calls(payload))
            }

            fn listen(
                &self,
            ) -> futures::future::BoxFuture<
                '_,
                $crate::store::StoreResult<Option<futures::stream::BoxStream<'static, String>>>,
            > {
                Box::pin(self.listen_calls())
            }

            fn close(&self) -> futures::future::BoxFuture<'_, ()> {
                Box::pin(async move { self.pool.close().await })
            }
        }
    };
}

pub(crate) use impl_store;
